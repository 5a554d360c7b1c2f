package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// startServer starts the engine's server side in the server's namespace:
// boottorrent start, or the harness's HTTP server (with the lab seeder).
func (r *runner) startServer(ctx context.Context, lan *LAN, logDir string) (*proc, error) {
	helper := func(name string, args ...string) *exec.Cmd {
		cmd := lan.Server.NS.Command(context.WithoutCancel(ctx), r.o.Self, args...)
		cmd.Env = append(os.Environ(), HelperEnv+"="+name)
		return cmd
	}
	switch r.o.Engine {
	case EngineBoottorrent:
		cmd := lan.Server.NS.Command(context.WithoutCancel(ctx), r.o.Boottorrent, "start", "--dir", r.project)
		return start(cmd, filepath.Join(logDir, "server.log"), nil)
	case EngineLab:
		// The seeder beside the HTTP server; stopping the HTTP server
		// stops the seeder too.
		os.Remove(r.labTorrent())
		seed, err := start(helper("lab-seed", r.image, r.labTorrent(), "6881", fmt.Sprint(r.o.LabPiece)), filepath.Join(logDir, "lab-seed.log"), nil)
		if err != nil {
			return nil, err
		}
		srv, err := start(helper("serve", r.image, fmt.Sprintf("%s:8080", ServerPrefix.Addr())), filepath.Join(logDir, "server.log"), nil)
		if err != nil {
			seed.stop()
			return nil, err
		}
		srv.also = seed
		return srv, nil
	}
	return start(helper("serve", r.image, fmt.Sprintf("%s:8080", ServerPrefix.Addr())), filepath.Join(logDir, "server.log"), nil)
}

func (r *runner) labTorrent() string { return filepath.Join(r.work, "lab.torrent") }

// waitReady polls the server from its own namespace until it serves the
// image (harness) or lists the OS with its info hash (boottorrent: the
// seeder has hashed or verified the image).
func (r *runner) waitReady(ctx context.Context, lan *LAN, srv *proc) error {
	path := "/" + imageName
	if r.o.Engine == EngineBoottorrent {
		path = "/api/v1/oss"
	}
	deadline := time.Now().Add(5 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-srv.done:
			return fmt.Errorf("the server exited: %v (see its log)", srv.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if r.o.Engine == EngineLab {
			if _, err := os.Stat(r.labTorrent()); err != nil {
				last = errors.New("the lab seeder has not written its torrent yet")
				continue
			}
		}
		if r.o.Engine != EngineBoottorrent {
			// A HEAD-like probe: read only the first bytes.
			if _, err := nsGet(ctx, lan.Server.NS, serverURL()+path, 1); err != nil {
				last = err
				continue
			}
			return nil
		}
		body, err := nsGet(ctx, lan.Server.NS, serverURL()+path, 1<<20)
		if err != nil {
			last = err
			continue
		}
		if ok, err := osReady(body, osName); ok {
			return nil
		} else {
			last = err
		}
	}
	return fmt.Errorf("not ready after 5 minutes: %v", last)
}

// outcome is one client's result in a phase.
type outcome struct {
	Done    bool
	Seconds float64 // from the start of the phase until the client completed
	Err     string

	FromPeers, FromSeeder, FromWeb int64
	Uploaded, PiecesFailed, Wasted int64
	// WastedSeeder is the part of Wasted that came from the seeder;
	// Requests, Withdrawn and Rejected count chunk requests
	// (initramfs/client.Progress).
	WastedSeeder, Requests, Withdrawn, Rejected int64
	// SeedSeconds is how long the client seeded before it reported;
	// DownloadSeconds its own download time (first request → complete).
	SeedSeconds, DownloadSeconds float64
}

// phaseEgress is what the server sent between the start of a phase and
// its last client's completion.
type phaseEgress struct {
	Bytes int64       // the link's TxBytes, headers included
	Kinds EgressKinds // by kind, in IP bytes (see EgressKinds); nil when unread
	BusyS float64     // when the server had sent 95 % of Bytes
}

// runPhase starts every client at once and waits until all completed (or
// failed, or the timeout), then lets them finish (seeding) and stops them.
func (r *runner) runPhase(ctx context.Context, lan *LAN, name string, timeout time.Duration, logDir string, http bool) ([]outcome, phaseEgress, error) {
	n := len(lan.Clients)
	log := r.o.Log.With("clients", n, "phase", name)
	dataRoot, err := os.MkdirTemp(shmDir(), "swarmbench-")
	if err != nil {
		return nil, phaseEgress{}, err
	}
	defer os.RemoveAll(dataRoot)

	before, err := lan.Server.Counters()
	if err != nil {
		return nil, phaseEgress{}, err
	}
	// Right after the link's counters, here and at the end, so that
	// both cover about the same window.
	kindsBefore, err := lan.ServerEgressKinds()
	if err != nil {
		return nil, phaseEgress{}, err
	}
	// Follow the server's egress, to tell a phase limited by the
	// server's uplink (busy until the end) from one limited by the
	// exchange among clients (server done early).
	type point struct {
		t      float64
		tx     int64
		upload int64 // every client's upload, summed
	}
	// One `ip` call per sample: what the bridge received from the
	// server's link is what the server sent.
	srv0, up0, err0 := lan.Sent()
	var trace []point
	traceStop := make(chan struct{})
	traceDone := make(chan struct{})
	go func() {
		defer close(traceDone)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for err0 == nil {
			select {
			case <-traceStop:
				return
			case <-tk.C:
			}
			if srv, up, err := lan.Sent(); err == nil {
				trace = append(trace, point{time.Since(before.at).Seconds(), srv - srv0, up - up0})
			}
		}
	}()
	res := make([]outcome, n)
	var mu sync.Mutex
	completed := make(chan int, n)
	procs := make([]*proc, n)
	t0 := time.Now()
	for i, h := range lan.Clients {
		var cmd *exec.Cmd
		var detect func(string) (outcome, bool)
		switch {
		case r.o.Engine != EngineBoottorrent && http:
			cmd = h.NS.Command(context.WithoutCancel(ctx), r.o.Self, serverURL()+"/"+imageName)
			cmd.Env = append(os.Environ(), HelperEnv+"=fetch")
			detect = func(line string) (outcome, bool) {
				f, ok := parseFetchLine(line)
				if !ok {
					return outcome{}, false
				}
				return outcome{Done: f.Error == "" && f.Bytes == r.size, Err: fetchErr(f, r.size)}, true
			}
		case r.o.Engine == EngineLab:
			dir := filepath.Join(dataRoot, fmt.Sprint(i))
			args := []string{r.labTorrent(), dir, "6881", r.o.SeedTime.String(), fmt.Sprintf("%s:6881", ServerPrefix.Addr())}
			for j, o := range lan.Clients {
				if j != i {
					args = append(args, fmt.Sprintf("%s:6881", o.Addr.Addr()))
				}
			}
			cmd = h.NS.Command(context.WithoutCancel(ctx), r.o.Self, args...)
			cmd.Env = append(os.Environ(), HelperEnv+"=lab-leech")
			if r.o.LabSpread {
				cmd.Env = append(cmd.Env, fmt.Sprintf("SWARMBENCH_LAB_SPREAD=%d/%d", i, n))
			}
			detect = func(line string) (outcome, bool) { return parseLabLine(line, r.size) }
		default:
			dir := filepath.Join(dataRoot, fmt.Sprint(i))
			os.MkdirAll(dir, 0o755)
			args := []string{"client", "--server", serverURL(), "--iface", "eth0", "--no-kexec",
				"--os", osName, "--data-dir", dir, "--listen-port", "6881",
				// Like /init: a machine never gives up (the phase's
				// time limit ends a case that cannot finish).
				"--attempts", "0"}
			if http {
				args = append(args, "--http")
			}
			if r.o.Profile {
				args = append(args, "--cpuprofile", filepath.Join(logDir, fmt.Sprintf("%s-%03d.pprof", name, i)))
			}
			cmd = h.NS.Command(context.WithoutCancel(ctx), r.o.Boottorrent, args...)
			if len(r.o.ClientEnv) > 0 {
				cmd.Env = append(os.Environ(), r.o.ClientEnv...)
			}
			detect = func(line string) (outcome, bool) { return parseClientLine(line, r.size) }
		}
		nice(cmd, r.o.ClientNice)
		i := i
		reported := false
		p, err := start(cmd, filepath.Join(logDir, fmt.Sprintf("%s-%03d.log", name, i)), func(line string) {
			o, ok := detect(line)
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if reported {
				return
			}
			reported = true
			// The client reports after seeding: it completed SeedSeconds
			// before this line.
			o.Seconds = time.Since(t0).Seconds() - o.SeedSeconds
			res[i] = o
			completed <- i
		})
		if err != nil {
			for _, p := range procs[:i] {
				p.stop()
			}
			close(traceStop)
			<-traceDone
			return nil, phaseEgress{}, fmt.Errorf("start client %d: %w", i, err)
		}
		procs[i] = p
		go func() {
			<-p.done
			mu.Lock()
			defer mu.Unlock()
			if !reported {
				reported = true
				res[i] = outcome{Err: fmt.Sprintf("exited without a result (%v); see %s", p.err, filepath.Join(logDir, fmt.Sprintf("%s-%03d.log", name, i)))}
				completed <- i
			}
		}()
	}
	log.Info("clients started", "duration", time.Since(t0).Round(time.Millisecond))
	var phaseErr error
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for got := 0; got < n; {
		select {
		case i := <-completed:
			got++
			mu.Lock()
			o := res[i]
			mu.Unlock()
			log.Info("client finished", "client", i, "done", o.Done, "seconds", round(o.Seconds), "error", o.Err)
		case <-timer.C:
			phaseErr = fmt.Errorf("%d of %d clients not done after %s", n-got, n, timeout)
			got = n
		case <-ctx.Done():
			phaseErr = ctx.Err()
			got = n
		}
	}
	after, err := lan.Server.Counters()
	if err != nil && phaseErr == nil {
		phaseErr = err
	}
	egress := after.TxBytes - before.TxBytes
	var kinds EgressKinds
	if kindsAfter, err := lan.ServerEgressKinds(); err != nil {
		if phaseErr == nil {
			phaseErr = err
		}
	} else {
		kinds = kindsAfter.Sub(kindsBefore)
	}
	close(traceStop)
	<-traceDone
	// The trace goes into the logs, for tuning (best effort).
	var tsv strings.Builder
	tsv.WriteString("seconds\tserver_sent_bytes\tclients_sent_bytes\n")
	for _, p := range trace {
		fmt.Fprintf(&tsv, "%.2f\t%d\t%d\n", p.t, p.tx, p.upload)
	}
	os.WriteFile(filepath.Join(logDir, name+"-traffic.tsv"), []byte(tsv.String()), 0o644)
	serverDone := 0.0
	for _, p := range trace {
		if p.tx >= egress*95/100 {
			serverDone = p.t
			break
		}
	}
	// Let clients seed out their seed time and exit on their own; then
	// stop them, so the next phase has the links to itself.
	dones := make([]<-chan struct{}, len(procs))
	for i, p := range procs {
		dones[i] = p.done
	}
	waitExits(ctx, dones, r.o.SeedTime+10*time.Second)
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := range res {
		if !res[i].Done && res[i].Err == "" {
			res[i].Err = "did not complete in time"
		}
	}
	return res, phaseEgress{Bytes: egress, Kinds: kinds, BusyS: serverDone}, phaseErr
}

func fetchErr(f FetchResult, want int64) string {
	switch {
	case f.Error != "":
		return f.Error
	case f.Bytes != want:
		return fmt.Sprintf("got %d bytes, want %d", f.Bytes, want)
	}
	return ""
}

// shmDir is where clients keep what they download: in RAM, like the real

var errNotReady = errors.New("the OS is not listed with an info hash yet")
