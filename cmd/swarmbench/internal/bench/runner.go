package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/config"
)

// Options configure a benchmark run.
type Options struct {
	Clients    []int
	Size       int64         // image bytes
	Rate       float64       // every client link, both directions, bits/s
	ServerRate float64       // the server's link, both directions, bits/s
	Latency    time.Duration // round trip between two hosts
	Loss       float64       // per client link direction
	Congestion string        // every host's TCP congestion control ("": this machine's default)
	Offload    bool          // keep segmentation offloads on (see LinkShape.Offload)
	Out        string        // where the report, plot and logs go
	// Engine is what runs on the LAN: EngineBoottorrent (the product),
	// EngineLab (anacrolix/torrent alone, with the product's settings) or
	// EngineHarness (no BitTorrent; the HTTP baseline with the harness's
	// own server and client). Lab and harness use Self as helpers.
	Engine string
	// Boottorrent is the boottorrent binary (EngineBoottorrent).
	Boottorrent string
	// LabPiece is the piece length of the lab's torrent.
	LabPiece int64
	// Profile passes --cpuprofile to every boottorrent client.
	Profile bool
	// ClientEnv is added to every boottorrent client's environment.
	ClientEnv []string
	// ClientNice is every client process's niceness (0: none).
	ClientNice int
	// LabSpread makes each lab leecher want its own share of the pieces
	// first (see lab.go).
	LabSpread bool
	// Self is the executable that runs the helpers (os.Executable()).
	Self string
	// Timeout bounds each phase; 0 picks one from the bounds.
	Timeout time.Duration
	// SeedTime is how long clients keep seeding after completing.
	SeedTime time.Duration
	// SkipHTTP leaves out the HTTP baseline (when only tuning boottorrent).
	SkipHTTP bool
	// Repeat runs every case's BitTorrent phase this many times (≥ 1) and
	// reports the median run (MergeRuns); the HTTP baseline runs once.
	Repeat  int
	Command string
	Log     *slog.Logger
}

// Engines.
const (
	EngineBoottorrent = "boottorrent"
	EngineLab         = "lab"
	EngineHarness     = "harness"
)

// saturated is the machine's busy fraction above which a case's times
// measure the emulation's CPU limit rather than the design.
const saturated = 0.60

// osName is the generated OS's folder name.
const osName = "bench"

// imageName is the generated OS's one big file.
const imageName = "image.bin"

// Run runs every case and returns the report. Cases that fail are kept in
// the report with their errors; Run stops early only when ctx ends.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.Out, "work-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	r := &runner{o: o, work: work}
	if err := r.prepare(); err != nil {
		return nil, err
	}
	rep := &Report{Command: o.Command, Started: time.Now().UTC(), Machine: ThisMachine(), HarnessOnly: o.Engine == EngineHarness,
		Engine: o.Engine, HTTPSkipped: o.SkipHTTP}
	for _, n := range o.Clients {
		if ctx.Err() != nil {
			break
		}
		var runs []Case
		for k := 1; k <= max(1, o.Repeat) && ctx.Err() == nil; k++ {
			runs = append(runs, r.runCase(ctx, n, k, k == 1 && !o.SkipHTTP))
		}
		if len(runs) == 0 {
			break
		}
		c := MergeRuns(runs)
		rep.Cases = append(rep.Cases, c)
		o.Log.Info("case done", "clients", n, "all_complete_s", round(c.AllCompleteS), "bound_s", round(c.BoundS),
			"http_all_complete_s", round(c.HTTPAllCompleteS), "egress_per_image", round(c.EgressPerImage),
			"peer_share", round(c.PeerShare), "cpu_peak", round(c.CPUPeakBusy), "cpu_steal", round(c.CPUStealMean), "http_cpu_steal", round(c.HTTPCPUStealMean), "invalid", c.Invalid, "errors", len(c.Errors))
	}
	rep.SetFlatness()
	return rep, ctx.Err()
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

type runner struct {
	o       Options
	work    string
	project string // boottorrent project folder (real mode)
	image   string // folder holding the image (harness mode)
	size    int64  // payload bytes a client downloads
}

// prepare writes the image and, with a boottorrent binary, the project.
func (r *runner) prepare() error {
	if r.o.Engine != EngineBoottorrent {
		r.image = filepath.Join(r.work, "www")
		if err := os.MkdirAll(r.image, 0o755); err != nil {
			return err
		}
		r.size = r.o.Size
		return writeRandom(filepath.Join(r.image, imageName), r.o.Size)
	}
	r.project = filepath.Join(r.work, "project")
	size, err := WriteProject(r.project, r.o.Size, r.o.SeedTime)
	r.size = size
	return err
}

// writeRandom writes n pseudo-random bytes (incompressible, so no layer
// can cheat by compressing).
func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var seed [32]byte
	copy(seed[:], "boottorrent swarmbench image....")
	src := rand.NewChaCha8(seed)
	if _, err := io.CopyN(f, src, n); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteProject writes a boottorrent project with full DHCP on the
// benchmark LAN and one OS of size random bytes, and returns the bytes a
// client downloads (the image plus the OS's config.yaml).
func WriteProject(dir string, size int64, seed time.Duration) (int64, error) {
	osDir := filepath.Join(dir, "oss", osName)
	if err := os.MkdirAll(osDir, 0o755); err != nil {
		return 0, err
	}
	cfg := fmt.Sprintf(`# Written by swarmbench: a download-only OS (the client runs with --no-kexec).
dispname: swarmbench %d-byte image
method: bin
bin: %s
`, size, imageName)
	if err := os.WriteFile(filepath.Join(osDir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		return 0, err
	}
	if err := writeRandom(filepath.Join(osDir, imageName), size); err != nil {
		return 0, err
	}
	bt := fmt.Sprintf(`# Written by swarmbench for its emulated LAN.
version: 1
server:
  interface: eth0
  address: %s
dhcp:
  mode: full
  range: %s
tftp:
  enabled: false
boot:
  default_os: %s
  timeout: 0s
  seed_time: %s
`, ServerPrefix.Addr(), LeaseRange, osName, seed)
	if err := os.WriteFile(filepath.Join(dir, "Boottorrent.yaml"), []byte(bt), 0o644); err != nil {
		return 0, err
	}
	return size + int64(len(cfg)), nil
}

func (r *runner) links(n int) Links {
	l := Links{ServerUp: r.o.ServerRate}
	for range n {
		l.ClientDown = append(l.ClientDown, r.o.Rate)
		l.ClientUp = append(l.ClientUp, r.o.Rate)
	}
	return l
}

// serverURL is the HTTP listener of the server on the benchmark LAN.
func serverURL() string { return fmt.Sprintf("http://%s:8080", ServerPrefix.Addr()) }

// runCase builds the LAN for n clients, runs the BitTorrent phase and,
// with withHTTP, the HTTP baseline; run numbers the repetitions (logs go
// to logs/nNNN, or logs/nNNN-rK with --repeat).
func (r *runner) runCase(ctx context.Context, n, run int, withHTTP bool) Case {
	log := r.o.Log.With("clients", n)
	if r.o.Repeat > 1 {
		log = log.With("run", run)
	}
	c := Case{Clients: n, SizeBytes: r.size, RateBps: r.o.Rate, ServerBps: r.o.ServerRate,
		LatencyMS: float64(r.o.Latency.Microseconds()) / 1000, Loss: r.o.Loss, Congestion: r.o.Congestion, Offload: r.o.Offload,
		ClientNice: r.o.ClientNice}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		c.Errors = append(c.Errors, msg)
		log.Error("case failed", "error", msg)
	}
	links := r.links(n)
	c.BoundS, _ = Bound(r.size, links)
	c.HTTPBoundS, _ = BoundHTTP(r.size, links)
	// Each phase is bounded: a client that never completes (a piece
	// nobody serves) must not hold the run for the HTTP phase's hours.
	btTimeout, httpTimeout := r.o.Timeout, r.o.Timeout
	if r.o.Timeout == 0 {
		btTimeout = time.Duration(10*c.BoundS)*time.Second + 90*time.Second
		httpTimeout = time.Duration(3*c.HTTPBoundS)*time.Second + 90*time.Second
	}

	oneWay := r.o.Latency / 4 // a round trip crosses four shaped queues
	shape := LinkShape{
		ServerUp:   Shape{Rate: r.o.ServerRate, Delay: oneWay},
		ServerDown: Shape{Rate: r.o.ServerRate, Delay: oneWay},
		ClientUp:   Shape{Rate: r.o.Rate, Delay: oneWay, Loss: r.o.Loss},
		ClientDown: Shape{Rate: r.o.Rate, Delay: oneWay, Loss: r.o.Loss},
		Congestion: r.o.Congestion,
		Offload:    r.o.Offload,
	}
	t0 := time.Now()
	lan, err := NewLAN(ctx, n, shape, r.o.Engine != EngineBoottorrent)
	if err != nil {
		fail("build LAN: %v", err)
		return c
	}
	defer lan.Close()
	log.Info("LAN ready", "duration", time.Since(t0).Round(time.Millisecond))

	logDir := filepath.Join(r.o.Out, "logs", fmt.Sprintf("n%03d", n))
	if r.o.Repeat > 1 {
		logDir += fmt.Sprintf("-r%d", run)
	}
	os.MkdirAll(logDir, 0o755)
	// Every run gets a fresh server, leases included: the server keeps
	// its full-mode leases in the project (netboot.LeaseFileName, for an
	// hour), and each run's clients have new MAC addresses, so with
	// --repeat the third run of 100 clients found the range used up.
	if r.project != "" {
		if err := os.Remove(filepath.Join(r.project, config.OutDirName, "leases.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fail("forget the last run's leases: %v", err)
			return c
		}
	}
	srv, err := r.startServer(ctx, lan, logDir)
	if err != nil {
		fail("start server: %v", err)
		return c
	}
	defer srv.stop()
	if err := r.waitReady(ctx, lan, srv); err != nil {
		fail("server not ready: %v", err)
		return c
	}

	cpu0 := childrenCPU()
	sampler := StartSampler(time.Second)
	measured := time.Now()
	var bt, hs []float64
	if r.o.Engine != EngineHarness {
		res, egress, err := r.runPhase(ctx, lan, r.o.Engine, btTimeout, logDir, false)
		if err != nil {
			fail("%s phase: %v", r.o.Engine, err)
		}
		c.ServerEgressBytes, c.ServerBusyS, c.ServerEgressKinds = egress.Bytes, egress.BusyS, egress.Kinds
		for i, o := range res {
			if o.Done {
				bt = append(bt, o.Seconds)
			} else {
				fail("boottorrent client %d: %s", i, o.Err)
			}
			c.PeerBytes += o.FromPeers
			c.SeederBytes += o.FromSeeder
			c.WebSeedBytes += o.FromWeb
			c.WastedBytes += o.Wasted
			c.WastedSeederBytes += o.WastedSeeder
			c.Requests += o.Requests
			c.RequestsWithdrawn += o.Withdrawn
			c.RequestsRejected += o.Rejected
			c.PiecesFailed += o.PiecesFailed
		}
	}
	// The means describe the BitTorrent phase; the HTTP phase only adds
	// to the peaks.
	c.CPUPeakBusy, c.CPUMeanBusy, c.MemPeakBytes = sampler.Stop()
	c.CPUStealMean = sampler.Steal()
	c.MeasuredS = time.Since(measured).Seconds()
	c.BenchCPUS = childrenCPU() - cpu0
	if withHTTP && ctx.Err() == nil {
		sampler := StartSampler(time.Second)
		res, egress, err := r.runPhase(ctx, lan, "http", httpTimeout, logDir, true)
		if err != nil {
			fail("http phase: %v", err)
		}
		c.HTTPServerEgressBytes, c.HTTPServerEgressKinds = egress.Bytes, egress.Kinds
		for i, o := range res {
			if o.Done {
				hs = append(hs, o.Seconds)
			} else {
				fail("http client %d: %s", i, o.Err)
			}
		}
		peak, mean, mem := sampler.Stop()
		c.HTTPCPUStealMean = sampler.Steal()
		c.CPUPeakBusy, c.MemPeakBytes = max(c.CPUPeakBusy, peak), max(c.MemPeakBytes, mem)
		if r.o.Engine == EngineHarness { // no BitTorrent phase: the means are the HTTP phase's
			c.CPUMeanBusy = mean
			c.MeasuredS = time.Since(measured).Seconds()
			c.BenchCPUS = childrenCPU() - cpu0
		}
	}
	srv.stop()
	c.BenchCPUBusy = ratio(c.BenchCPUS, c.MeasuredS*float64(runtime.NumCPU()))
	c.Invalid = invalidNote(c)
	c.Finish(bt, hs)
	return c
}

// childrenCPU is the CPU time, user and system, of the benchmark's
// finished child processes (server, clients, ip, tc).
func childrenCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// proc is a process the runner started, with its output going to a log
// file and, line by line, to a callback.
type proc struct {
	also   *proc // stopped with this one
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	closed sync.Once
}

// start runs prog in ns with its output to logPath; onLine sees each line.
// Without onLine the output goes straight to the file: through a pipe,
// the process's every write (its log) would wait on this process reading
// it, and on a saturated host this one gets a hundredth of the CPU
// (N = 100: the server's DHCP replies waited up to 100 s behind its log,
// cmd/swarmbench/TUNING.md, 2026-11-24).
func start(cmd *exec.Cmd, logPath string, onLine func(string)) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	if onLine == nil {
		return startToFile(cmd, lf)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		lf.Close()
		return nil, err
	}
	pw.Close()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		defer lf.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lf.Write(append(sc.Bytes(), '\n'))
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		io.Copy(lf, pr) // a line over 1 MiB: keep the rest in the log
	}()
	go func() {
		p.err = cmd.Wait()
		<-lines
		close(p.done)
	}()
	return p, nil
}

// DefaultClientNice is the clients' niceness unless --client-nice says
// otherwise: 0, the same as the server. On a real LAN every machine has
// its own CPU; here N client processes and the server share two cores,
// and the kernel shares them out per thread, so with 100 clients busy the
// server, which answers all of them, gets about a hundredth. At N = 100
// (8 MiB, 2 Mbit/s) on a saturated host, --client-nice 19 gave the server
// what it needed (no DHCP answer late, against 193 stages failed), but
// the starved clients then fell back to the web seed (11 copies from the
// server against 6) and the run took as long; at N = 30 it changed
// nothing (cmd/swarmbench/TUNING.md, 2026-11-24). The default keeps
// runs comparable with earlier ones; the option is there for a host
// that starves the server.
const DefaultClientNice = 0

// nice makes cmd start at niceness n (0: unchanged) by running it under
// nice(1), so that every thread the program starts inherits it.
func nice(cmd *exec.Cmd, n int) {
	if n == 0 {
		return
	}
	path, err := exec.LookPath("nice")
	if err != nil {
		return // coreutils is on every Debian; without it, no change
	}
	cmd.Args = append([]string{"nice", "-n", fmt.Sprint(n), cmd.Path}, cmd.Args[1:]...)
	cmd.Path = path
}

// startToFile runs cmd with its output to lf, which it closes.
func startToFile(cmd *exec.Cmd, lf *os.File) (*proc, error) {
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Start()
	lf.Close() // the child has its own descriptor
	if err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop asks the process to end (SIGTERM), then kills it after 5 s.
func (p *proc) stop() {
	if p.also != nil {
		defer p.also.stop()
	}
	p.closed.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
}

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
// boot client, so the disk does not take part in the measurement.
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

var errNotReady = errors.New("the OS is not listed with an info hash yet")

// waitExits waits until every channel in dones is closed, for at most
// grace in all. (With a time.After channel, which fires once, the wait
// went on for every other client's own exit: 14 minutes after a
// timed-out phase at N = 100.)
func waitExits(ctx context.Context, dones []<-chan struct{}, grace time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return
		}
	}
}

// hostBusy is the mean steal time above which a phase ran on a host too
// busy to measure anything: the host took that share of the cores.
const hostBusy = 0.10

// invalidNote says why a case's numbers do not measure the design: the
// machine saturated, or the host took the CPU from under it (steal).
func invalidNote(c Case) string {
	var why []string
	if c.CPUPeakBusy > saturated {
		why = append(why, fmt.Sprintf("machine saturated (CPU %.0f %% busy at peak, %.0f %% on average; the benchmark's own processes %.0f %%)",
			100*c.CPUPeakBusy, 100*c.CPUMeanBusy, 100*c.BenchCPUBusy))
	}
	if c.CPUStealMean > hostBusy {
		why = append(why, fmt.Sprintf("host busy (it took %.0f %% of the CPU during the downloads: steal time)", 100*c.CPUStealMean))
	}
	if c.HTTPCPUStealMean > hostBusy {
		why = append(why, fmt.Sprintf("host busy during the HTTP baseline (steal %.0f %%)", 100*c.HTTPCPUStealMean))
	}
	if len(why) == 0 {
		return ""
	}
	return "invalid: " + strings.Join(why, "; ")
}
