package seeder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// needTools skips the test unless every tool is installed.
func needTools(t testing.TB, tools map[string]string) {
	t.Helper()
	for bin, pkg := range tools {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: apt-get install %s", bin, pkg)
		}
	}
}

// lanEnv is a virtual LAN: the server in one namespace (10.77.0.1) running
// the seeder behind a real HTTP listener, and client namespaces
// (10.77.0.11, .12, ...) that run Debian's BitTorrent clients.
type lanEnv struct {
	lan     *netns.LAN
	srv     *netns.NS
	clients []*netns.NS
	p       *config.Project
	handler atomic.Pointer[http.Handler]
	seeder  *Seeder
	rec     *logRecorder
}

const lanServer = "10.77.0.1"

func newLANEnv(t *testing.T, nClients int, oses ...testOS) *lanEnv {
	t.Helper()
	addrs := []string{lanServer + "/24"}
	for i := range nClients {
		addrs = append(addrs, fmt.Sprintf("10.77.0.%d/24", 11+i))
	}
	lan, hosts := nstest.LAN(t, addrs...)
	e := &lanEnv{lan: lan, srv: hosts[0], clients: hosts[1:]}
	e.p = makeProject(t, lanServer, 8080, oses...)
	var l net.Listener
	if err := e.srv.Do(func() (err error) { l, err = net.Listen("tcp", lanServer+":8080"); return err }); err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := e.handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "no seeder", 503)
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	return e
}

// start runs a seeder with opts inside the server namespace (its sockets
// live there), replacing the previous one.
func (e *lanEnv) start(t *testing.T, opts Options) {
	t.Helper()
	if e.seeder != nil {
		e.seeder.Close()
	}
	var s *Seeder
	s, e.rec = newSeeder(t, e.p, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.srv.Do(func() error { return s.Start(ctx) }); err != nil {
		t.Fatal(err)
	}
	// The library dials from goroutines on any OS thread, outside the
	// server's namespace where its sockets were made: give it a dialer
	// that opens connections inside (the seeder dials back leechers).
	if s.client != nil {
		s.client.AddDialer(torrent.NetworkDialer{Network: "tcp", Dialer: e.srv})
	}
	h := s.Handler()
	e.handler.Store(&h)
	e.seeder = s
}

// checkDownload compares every file of the OS under dir/<name>/ with the
// original by SHA-256.
func (e *lanEnv) checkDownload(t *testing.T, dir, name string) {
	t.Helper()
	o := e.p.OS(name)
	for _, f := range o.Files {
		got, want := filepath.Join(dir, name, f), filepath.Join(o.Dir, f)
		if _, err := os.Stat(got); err != nil {
			t.Errorf("%s: %v", got, err)
			continue
		}
		if sha256File(t, got) != sha256File(t, want) {
			t.Errorf("%s/%s: checksum differs from the original", name, f)
		}
	}
}

func aria2Args(dir string, seedMinutes string, urls ...string) []string {
	return append([]string{
		"-Z", "--dir=" + dir, "--follow-torrent=mem", "--seed-time=" + seedMinutes,
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
		"--file-allocation=none", "--summary-interval=0", "--console-log-level=warn",
		"--listen-port=6881", "--bt-stop-timeout=120", "--allow-overwrite=true", "--auto-file-renaming=false",
		"--log=" + filepath.Join(dir, "aria2.log"), "--log-level=info",
	}, urls...)
}

// runAria2 downloads urls (torrent URLs) in ns with aria2c.
func runAria2(t *testing.T, ns *netns.NS, dir, seedMinutes string, urls ...string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := ns.Command(ctx, "aria2c", aria2Args(dir, seedMinutes, urls...)...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "aria2.log"))
		t.Fatalf("aria2c: %v\n%s\n--- log tail:\n%s", err, out, tail(string(log), 3000))
	}
	return time.Since(start)
}

// tail returns the last n bytes of s without transmission-cli's progress
// lines.
func tail(s string, n int) string {
	var keep []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if !strings.HasPrefix(strings.TrimSpace(l), "Progress:") {
			keep = append(keep, l)
		}
	}
	s = strings.Join(keep, "\n")
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// runTransmission downloads one torrent in ns with transmission-cli, which
// seeds forever once done: a finish script (-f) drops a marker and the
// process is then stopped.
func runTransmission(t *testing.T, ns *netns.NS, dir, torrentURL string, limit time.Duration) time.Duration {
	t.Helper()
	return runTransmissionUTP(t, ns, dir, torrentURL, limit, false)
}

// runTransmissionUTP is runTransmission with uTP on (Transmission's
// default) or off.
func runTransmissionUTP(t *testing.T, ns *netns.NS, dir, torrentURL string, limit time.Duration, utp bool) time.Duration {
	t.Helper()
	cfg := filepath.Join(dir, "config")
	os.MkdirAll(cfg, 0o755)
	// Keep it on the LAN: no DHT, LPD or port mapping.
	os.WriteFile(filepath.Join(cfg, "settings.json"), []byte(fmt.Sprintf(`{"dht-enabled": false, "lpd-enabled": false, "utp-enabled": %v,
 "port-forwarding-enabled": false, "pex-enabled": true, "rename-partial-files": true, "message-level": 3}`, utp)), 0o644)
	marker := filepath.Join(dir, "finished")
	script := filepath.Join(dir, "finish.sh")
	os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var out nstest.Buffer
	start := time.Now()
	// transmission-cli 3.00, Debian's, sometimes dies of a segmentation
	// fault while it downloads from a web seed (its web seed code had
	// use-after-free bugs, fixed only in 4.x: transmission/transmission
	// issues 2728 and 3561). It resumes from what it has, once.
	for attempt := 1; ; attempt++ {
		cmd := ns.Command(ctx, "transmission-cli", "-g", cfg, "-w", dir, "-f", script, "-M", "-p", "51413", torrentURL)
		cmd.Stdout = &out
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		d, err := waitTransmission(ctx, cmd, done, marker, start)
		if err == nil {
			if os.Getenv("SEEDER_TEST_VERBOSE") != "" {
				t.Logf("transmission-cli output:\n%s", out.String())
			}
			return d
		}
		if attempt == 1 && killedBy(err, syscall.SIGSEGV) {
			t.Logf("transmission-cli 3.00 crashed (%v); starting it again on what it has", err)
			continue
		}
		t.Fatalf("%v\n%s", err, tail(out.String(), 3000))
	}
}

// killedBy says whether err reports a process killed by sig.
func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// waitTransmission waits until transmission-cli drops its finish marker
// (then stops it and returns the time since start), exits, or ctx ends.
func waitTransmission(ctx context.Context, cmd *exec.Cmd, done chan error, marker string, start time.Time) (time.Duration, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return 0, fmt.Errorf("transmission-cli exited before finishing: %w", err)
		case <-ctx.Done():
			cmd.Process.Kill()
			<-done
			return 0, errors.New("transmission-cli did not finish in time")
		case <-tick.C:
			if _, err := os.Stat(marker); err == nil {
				d := time.Since(start)
				cmd.Process.Kill()
				<-done
				return d, nil
			}
		}
	}
}

// TestRealClients has Debian's aria2c and transmission-cli, each in its own
// namespace on a virtual LAN, download every OS from a running seeder and
// checks the files: with seeder and web seed, with the web seed alone (no
// BitTorrent seeder) and with the seeder alone (no web seed).
func TestRealClients(t *testing.T) {
	needTools(t, map[string]string{"aria2c": "aria2", "transmission-cli": "transmission-cli"})
	e := newLANEnv(t, 2,
		testOS{"alpha", map[string]int64{"vmlinuz": 5 << 20, "initrd.img": 19<<20 + 12345}},
		testOS{"beta", map[string]int64{"vmlinuz": 3 << 20, "initrd.img": 2 << 20, "extra.bin": 777}})
	modes := []struct {
		name string
		opts Options
	}{
		{"seeder and web seed", Options{}},
		{"web seed only", Options{NoSeed: true}},
		{"seeder only", Options{NoWebSeed: true}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e.start(t, m.opts)
			base := "http://" + lanServer + ":8080/torrents/"
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				dir := t.TempDir()
				d := runAria2(t, e.clients[0], dir, "0", base+"alpha.torrent", base+"beta.torrent")
				e.checkDownload(t, dir, "alpha")
				e.checkDownload(t, dir, "beta")
				t.Logf("aria2c: alpha+beta in %v", d.Round(time.Millisecond))
			}()
			go func() {
				defer wg.Done()
				for _, name := range []string{"alpha", "beta"} {
					dir := t.TempDir()
					d := runTransmission(t, e.clients[1], dir, base+name+".torrent", 40*time.Second)
					e.checkDownload(t, dir, name)
					t.Logf("transmission-cli: %s in %v", name, d.Round(time.Millisecond))
				}
			}()
			wg.Wait()
			st := e.seeder.Stats()
			web := e.seeder.WebSeed().BytesServed()
			t.Logf("seeder uploaded alpha %d beta %d bytes; web seed served %d bytes", st["alpha"].Uploaded, st["beta"].Uploaded, web)
			switch {
			case m.opts.NoSeed && (st["alpha"].Uploaded != 0 || web == 0):
				t.Errorf("web seed only: seeder %v, web seed %d bytes", st, web)
			case m.opts.NoWebSeed && web != 0:
				t.Errorf("seeder only: web seed served %d bytes", web)
			case m.opts.NoWebSeed && st["alpha"].Uploaded == 0:
				t.Errorf("seeder only: seeder uploaded nothing")
			}
		})
	}
}

// TestClientsExchangePieces runs two aria2c at once against a seeder whose
// upload is capped and without web seed: every byte the clients get comes
// from the seeder or from each other, and the seeder's own upload counter
// (cumulative, so unaffected by the library dropping finished peer pairs)
// shows how much came from the peers.
func TestClientsExchangePieces(t *testing.T) {
	needTools(t, map[string]string{"aria2c": "aria2"})
	const size = 24 << 20
	e := newLANEnv(t, 2, testOS{"alpha", map[string]int64{"vmlinuz": 4 << 20, "initrd.img": size - 4<<20}})
	e.start(t, Options{NoWebSeed: true, UploadLimit: 2 << 20})
	var wg sync.WaitGroup
	dirs := []string{t.TempDir(), t.TempDir()}
	for i, ns := range e.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Both clients pick pieces in the same order (rarest first
			// sees one seeder), so started together they would fetch
			// the same pieces from the seeder at the same time. The
			// second starts a few seconds later, as booting machines
			// do, while the first is still downloading; both seed a
			// little after completing.
			time.Sleep(time.Duration(i) * 4 * time.Second)
			runAria2(t, ns, dirs[i], "0.15", "http://"+lanServer+":8080/torrents/alpha.torrent")
		}()
	}
	wg.Wait()
	total := int64(e.p.OS("alpha").Size)
	for _, d := range dirs {
		e.checkDownload(t, d, "alpha")
	}
	if d := os.Getenv("SEEDER_TEST_KEEP"); d != "" {
		for i, dir := range dirs {
			b, _ := os.ReadFile(filepath.Join(dir, "aria2.log"))
			os.WriteFile(filepath.Join(d, fmt.Sprintf("aria2-%d.log", i)), b, 0o644)
		}
	}
	up := e.seeder.Stats()["alpha"].Uploaded
	fromPeers := 2*total - up
	t.Logf("clients received %d bytes; seeder uploaded %d; from peers at least %d (%.0f%%)", 2*total, up, fromPeers, 100*float64(fromPeers)/float64(2*total))
	if fromPeers < total/8 {
		t.Fatalf("seeder uploaded %d of %d bytes: the clients got less than an eighth of a copy from each other", up, 2*total)
	}
	// aria2c's own log names the peers it got pieces from.
	for i, d := range dirs {
		log, _ := os.ReadFile(filepath.Join(d, "aria2.log"))
		other := "10.77.0." + strconv.Itoa(11+(1-i))
		if !strings.Contains(string(log), other) {
			t.Errorf("client %d's aria2c log never mentions its peer %s", i, other)
		}
	}
}

// TestAria2cUDPTracker has aria2c find the seeder through the UDP tracker
// (BEP 15) alone: the HTTP tracker is excluded and there is no web seed.
func TestAria2cUDPTracker(t *testing.T) {
	needTools(t, map[string]string{"aria2c": "aria2"})
	e := newLANEnv(t, 1, testOS{"alpha", map[string]int64{"vmlinuz": 1 << 20, "initrd.img": 3 << 20}})
	e.start(t, Options{NoWebSeed: true})
	dir := t.TempDir()
	// aria2c talks to UDP trackers over its DHT socket, so DHT is on here;
	// the namespace has no route anywhere else, and the torrent is
	// private, so it stays unused.
	runAria2(t, e.clients[0], dir, "0", "--bt-exclude-tracker=http://"+lanServer+":8080/announce",
		"--enable-dht=true", "--dht-listen-port=6882", "--dht-file-path="+filepath.Join(dir, "dht.dat"),
		"http://"+lanServer+":8080/torrents/alpha.torrent")
	e.checkDownload(t, dir, "alpha")
	if r := e.rec.find("tracker: announce", "proto", "udp"); len(r) == 0 {
		t.Fatal("no UDP announce seen by the tracker")
	} else if r[0]["src"] != "10.77.0.11:6881" {
		t.Fatalf("UDP announce from %s, want 10.77.0.11:6881", r[0]["src"])
	}
	if r := e.rec.find("tracker: announce", "proto", "http"); len(r) != 0 {
		t.Fatalf("HTTP announces seen although excluded: %v", r)
	}
}
