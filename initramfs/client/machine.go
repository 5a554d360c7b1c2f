package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// env is everything the client's state machine does to the outside
// world. The real one (realEnv) touches the network, the console and the
// kernel; tests fake it.
type env interface {
	// Network loads drivers, brings the link up and takes a lease.
	Network(ctx context.Context) error
	// Boot fetches the menu and this machine's settings.
	Boot(ctx context.Context) (*bootapi.Boot, error)
	// Choose shows the menu and returns the chosen OS, or nil for the
	// rescue shell.
	Choose(ctx context.Context, b *bootapi.Boot, note string) (*bootapi.OS, error)
	// Download starts fetching an OS.
	Download(ctx context.Context, b *bootapi.Boot, o *bootapi.OS) (downloader, error)
	// Start boots the downloaded OS. It returns only on failure, or with
	// nil when the client is to exit (--no-kexec, a bin that ended).
	Start(ctx context.Context, o *bootapi.OS, f *Fetched, dl downloader) error
	// Report sends a report to the server (best effort).
	Report(ctx context.Context, r *bootapi.Report) error
	// Shell runs the rescue shell until the user leaves it.
	Shell(ctx context.Context)
}

// machine is the client's state machine: network → boot API → menu →
// download → seed → boot, with every failure shown, reported, and
// followed by a retry or the menu again.
type machine struct {
	env     env
	cfg     *Config
	log     *slog.Logger
	console io.Writer // what the person at the machine reads
	result  io.Writer // machine-readable final line
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
	// tick is how often watch updates the console and checks whether a
	// report is due (0: every second).
	tick time.Duration

	// trust checks signed OSes before they boot (trust.go); nil checks
	// nothing.
	trust *clientTrust

	reportMu   sync.Mutex
	reportFail bool
}

// Result is the machine-readable last line (bootapi.Result).
type Result = bootapi.Result

// ResultPrefix starts the final line on stdout.
const ResultPrefix = bootapi.ResultPrefix

// errGiveUp ends the machine when the attempts are spent (process mode).
var errGiveUp = errors.New("giving up")

func (m *machine) say(format string, args ...any) {
	fmt.Fprintf(m.console, strings.ReplaceAll(format, "\n", "\r\n")+"\r\n", args...)
}

// fail shows a failure with what to check and reports it.
func (m *machine) fail(ctx context.Context, stage, osName string, err error, hint string) string {
	msg := fmt.Sprintf("%s failed: %v", stage, err)
	if hint != "" {
		msg += "; check: " + hint
	}
	m.say("\n!! %s", msg)
	m.log.Error("stage failed", "stage", stage, "os", osName, "err", err, "hint", hint)
	m.report(ctx, &bootapi.Report{Stage: bootapi.StageFailed, OS: osName, Message: msg})
	return msg
}

func (m *machine) report(ctx context.Context, r *bootapi.Report) {
	err := m.env.Report(ctx, r)
	m.reportMu.Lock()
	defer m.reportMu.Unlock()
	if err != nil && !m.reportFail {
		m.log.Warn("report to server failed", "stage", r.Stage, "err", err)
	}
	if err == nil && m.reportFail {
		m.log.Info("reports reach the server again", "stage", r.Stage)
	}
	m.reportFail = err != nil
}

// backoff is the wait before attempt n (1-based): 2 s doubling to 30 s.
func backoff(n int) time.Duration {
	d := 2 * time.Second
	for i := 1; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// run drives the client until it boots an OS (never returns on kexec),
// exits (--no-kexec, a bin that ended) or gives up (MaxAttempts).
func (m *machine) run(ctx context.Context) error {
	start := m.now()
	attempts := 0
	retry := func() error {
		attempts++
		if m.cfg.MaxAttempts > 0 && attempts >= m.cfg.MaxAttempts {
			return fmt.Errorf("%w after %d attempts", errGiveUp, attempts)
		}
		return m.sleep(ctx, backoff(attempts))
	}

	// Network: drivers, link, lease. The report can only go out once
	// the link has an address.
	for {
		t0 := m.now()
		err := m.env.Network(ctx)
		if err == nil {
			m.log.Info("network up", "stage", "network", "duration", m.now().Sub(t0).Round(time.Millisecond))
			m.report(ctx, &bootapi.Report{Stage: bootapi.StageNetwork})
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.fail(ctx, "network", "", err, "the cable and the switch port, that a DHCP server hands out addresses on this LAN (boottorrent's dhcp.mode: full, or the LAN's own DHCP server)")
		if err := retry(); err != nil {
			return err
		}
	}

	note := ""
	for {
		// The boot API: menu, settings, this machine's pinned OS.
		b, err := m.env.Boot(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m.fail(ctx, "fetching the menu", "", err, fmt.Sprintf("that boottorrent start runs on %s and is reachable from this LAN", m.cfg.Server))
			if err := retry(); err != nil {
				return err
			}
			continue
		}
		o, err := m.choose(ctx, b, note)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			note = m.fail(ctx, "menu", "", err, "the OS names in --os and the server's menu")
			if err := retry(); err != nil {
				return err
			}
			continue
		}
		if o == nil {
			m.say("rescue shell: type help for the commands, exit to return to the menu")
			m.env.Shell(ctx)
			continue
		}
		res, err := m.fetchAndBoot(ctx, b, o)
		if err == nil {
			if res != nil {
				res.Seconds = m.now().Sub(start).Seconds()
				res.Attempts = attempts + 1
				line, _ := json.Marshal(res)
				fmt.Fprintf(m.result, "%s%s\n", ResultPrefix, line)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		note = err.Error()
		if err := retry(); err != nil {
			return err
		}
	}
}

// choose applies the order of precedence: --os, the machine's pinned OS,
// a zero timeout (the default at once), then the menu.
func (m *machine) choose(ctx context.Context, b *bootapi.Boot, note string) (*bootapi.OS, error) {
	find := func(name string) *bootapi.OS {
		for i := range b.Menu {
			if b.Menu[i].Name == name {
				return &b.Menu[i]
			}
		}
		return nil
	}
	names := func() string {
		var s []string
		for _, o := range b.Menu {
			s = append(s, o.Name)
		}
		return strings.Join(s, ", ")
	}
	if m.cfg.OS != "" {
		if o := find(m.cfg.OS); o != nil {
			return o, nil
		}
		return nil, fmt.Errorf("OS %q is not in the server's menu (%s)", m.cfg.OS, names())
	}
	if b.PinnedOS != "" {
		if o := find(b.PinnedOS); o != nil {
			m.say("machine %s: booting its OS %s", b.Machine, o.DispName)
			return o, nil
		}
		m.say("machine %s: its OS %q is not in the menu (%s); showing the menu", b.Machine, b.PinnedOS, names())
	} else if b.TimeoutMS == 0 && note == "" {
		if o := find(b.DefaultOS); o != nil {
			return o, nil
		}
		return &b.Menu[0], nil
	}
	m.report(ctx, &bootapi.Report{Stage: bootapi.StageMenu})
	return m.env.Choose(ctx, b, note)
}

// fetchAndBoot downloads, seeds and boots one OS. An error means the
// attempt failed and was shown and reported.
func (m *machine) fetchAndBoot(ctx context.Context, b *bootapi.Boot, o *bootapi.OS) (*Result, error) {
	m.say("downloading %s (%s)", o.DispName, human(o.Size))
	m.log.Info("download start", "stage", "download", "os", o.Name, "bytes", o.Size)
	m.report(ctx, &bootapi.Report{Stage: bootapi.StageDownload, OS: o.Name, BytesTotal: o.Size})
	var signed *manifest.Verified
	if m.trust != nil {
		v, err := m.trust.before(ctx, o)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errors.New(m.fail(ctx, "signature check of "+o.Name, o.Name, err, trustedHint))
		}
		signed = v
	}
	t0 := m.now()
	dl, err := m.env.Download(ctx, b, o)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, err
		}
		msg := m.fail(ctx, "download of "+o.Name, o.Name, err, "the server's log and that the OS was hashed (boottorrent check)")
		return nil, errors.New(msg)
	}
	closeDL := true
	defer func() {
		if closeDL {
			dl.Close()
		}
	}()
	f, err := m.watch(ctx, b, o, bootapi.StageDownload, dl, func(ctx context.Context) (*Fetched, error) { return dl.Wait(ctx) })
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := m.fail(ctx, "download of "+o.Name, o.Name, err, "the server's log and the LAN")
		return nil, errors.New(msg)
	}
	dlTime := m.now().Sub(t0)
	p := dl.Progress()
	m.say("\n%s complete: %s in %s (%s/s); from peers %s, from the server %s, web seed %s",
		o.Name, human(f.Bytes), dlTime.Round(100*time.Millisecond), human(int64(float64(f.Bytes)/max(dlTime.Seconds(), 0.001))),
		human(p.FromPeers), human(p.FromSeeder), human(p.FromWeb))
	m.log.Info("download complete", "stage", "download", "os", o.Name, "bytes", f.Bytes, "duration", dlTime.Round(time.Millisecond),
		"from_peers", p.FromPeers, "from_seeder", p.FromSeeder, "from_webseed", p.FromWeb, "wasted", p.Wasted,
		"wasted_seeder", p.WastedSeeder, "requests", p.Requests, "requests_withdrawn", p.Withdrawn, "requests_rejected", p.Rejected,
		"seeder_redials", p.SeederDials)

	if m.trust != nil {
		if err := m.trust.after(signed, f); err != nil {
			return nil, errors.New(m.fail(ctx, "signature check of "+o.Name, o.Name, err, trustedHint))
		}
		if signed != nil {
			m.say("%s: every file matches the manifest signed by key %s (version %s)", o.Name, signed.KeyID, signed.Version)
		}
	}

	t1 := m.now()
	if st := b.SeedTime(); st > 0 {
		m.say("seeding for up to %s for the machines still downloading", st)
		m.watch(ctx, b, o, bootapi.StageSeeding, dl, func(ctx context.Context) (*Fetched, error) { dl.Seed(ctx, st); return f, nil })
	}
	seedTime := m.now().Sub(t1)
	p = dl.Progress()
	res := &Result{OS: o.Name, Mode: m.cfg.mode(), DownloadSeconds: dlTime.Seconds(), SeedSeconds: seedTime.Seconds(),
		Bytes: f.Bytes, FromPeers: p.FromPeers, FromSeeder: p.FromSeeder, FromWeb: p.FromWeb, Uploaded: p.Uploaded, PiecesFailed: p.PiecesFailed, Wasted: p.Wasted,
		WastedSeeder: p.WastedSeeder, Requests: p.Requests, Withdrawn: p.Withdrawn, Rejected: p.Rejected}
	m.report(ctx, m.progressReport(bootapi.StageBooting, o, p, 0))
	m.say("booting %s (%s)", o.DispName, o.Method)
	m.log.Info("booting", "stage", "booting", "os", o.Name, "method", o.Method)
	closeDL = false // Start owns it now: qemu seeds while it runs, kexec closes it
	if err := m.env.Start(ctx, o, f, dl); err != nil {
		dl.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := m.fail(ctx, "booting "+o.Name+" ("+o.Method+")", o.Name, err, startHint(o.Method))
		return nil, errors.New(msg)
	}
	return res, nil
}

func startHint(method string) string {
	switch method {
	case "kexec":
		return "that the OS's kernel file is a bzImage for this CPU, and Secure Boot (a locked-down kernel only kexecs signed kernels)"
	case "bin":
		return "that the OS's bin is a static executable for this CPU"
	case "qemu":
		return "the OS's args, and that the client initramfs was built with QEMU (some OS with method qemu at boottorrent start)"
	}
	return ""
}

func (m *machine) progressReport(stage string, o *bootapi.OS, p Progress, rate float64) *bootapi.Report {
	return &bootapi.Report{Stage: stage, OS: o.Name, ListenPort: m.cfg.ListenPort, BytesTotal: p.Total, BytesDone: p.Done,
		FromPeers: p.FromPeers, FromSeeder: p.FromSeeder, FromWeb: p.FromWeb, Uploaded: p.Uploaded,
		Peers: p.Peers + p.Seeders, RateBps: rate}
}

// jitter is a random factor between 0.75 and 1.25. A class switched on
// at once would otherwise report and ask for peers in the same second,
// every time: at N = 100 those bursts were the server's busiest seconds
// (cmd/swarmbench/TUNING.md).
func jitter() float64 { return 0.75 + rand.Float64()/2 }

// jittered returns d times jitter().
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * jitter())
}

// stallWarn is how long without data before the console says so.
const stallWarn = 15 * time.Second

// watch runs fn while showing progress on the console every second,
// reporting every ReportMS, and warning when no data arrives.
func (m *machine) watch(ctx context.Context, b *bootapi.Boot, o *bootapi.OS, stage string, dl downloader, fn func(context.Context) (*Fetched, error)) (*Fetched, error) {
	type res struct {
		f   *Fetched
		err error
	}
	done := make(chan res, 1)
	go func() {
		f, err := fn(ctx)
		done <- res{f, err}
	}()
	every := m.tick
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastReport := m.now()
	spread := jitter() // this report's share of the interval
	lastDone, lastT := dl.Progress().Done, m.now()
	rate := 0.0
	warned := time.Duration(0)
	var inFlight atomic.Bool
	for {
		select {
		case r := <-done:
			return r.f, r.err
		case <-tick.C:
		}
		p := dl.Progress()
		now := m.now()
		if dt := now.Sub(lastT).Seconds(); dt > 0 {
			rate = 0.7*rate + 0.3*float64(p.Done-lastDone)/dt
		}
		lastDone, lastT = p.Done, now
		if stage == bootapi.StageDownload {
			pct := 0.0
			if p.Total > 0 {
				pct = 100 * float64(p.Done) / float64(p.Total)
			}
			fmt.Fprintf(m.console, "\r %5.1f%% %s/%s %s/s  peers %d server %d | from peers %s, server %s, web %s   ",
				pct, human(p.Done), human(p.Total), human(int64(rate)), p.Peers, p.Seeders, human(p.FromPeers), human(p.FromSeeder), human(p.FromWeb))
			if p.Stalled >= stallWarn && p.Stalled-warned >= stallWarn {
				warned = p.Stalled
				msg := fmt.Sprintf("no data for %s (%d peers, %d server connections): check that boottorrent start still runs on %s and the LAN; still waiting", p.Stalled.Round(time.Second), p.Peers, p.Seeders, m.cfg.Server)
				m.say("\n!! %s", msg)
				m.log.Warn("download stalled", "stage", "download", "os", o.Name, "stalled", p.Stalled.Round(time.Second), "bytes", p.Done)
				r := m.progressReport(stage, o, p, rate)
				r.Message = msg
				m.report(ctx, r)
				lastReport = now
			} else if p.Stalled < stallWarn {
				warned = 0
			}
		}
		every := time.Duration(b.ReportMS) * time.Millisecond
		if p.ReportEvery > 0 {
			every = p.ReportEvery // a large class reports less often
		}
		if now.Sub(lastReport) >= time.Duration(float64(every)*spread) && inFlight.CompareAndSwap(false, true) {
			// One report at a time: a server that answers slowly
			// must not pile up goroutines.
			lastReport = now
			spread = jitter()
			r := m.progressReport(stage, o, p, rate)
			go func() { defer inFlight.Store(false); m.report(ctx, r) }()
		}
	}
}

func (c *Config) mode() string {
	if c.HTTP {
		return "http"
	}
	return "torrent"
}

// human formats a byte count.
func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
