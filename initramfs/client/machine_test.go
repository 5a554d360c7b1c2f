package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// fakeEnv scripts the outside world for the state machine.
type fakeEnv struct {
	mu        sync.Mutex
	netErrs   []error // returned by Network, one per call, then nil
	bootErrs  []error
	boot      *bootapi.Boot
	choices   []string // Choose answers ("" = rescue shell)
	chooseLog []string // notes Choose was called with
	dlErrs    []error
	startErrs []error
	started   []string
	shells    int
	reports   []bootapi.Report
	calls     []string
}

func (f *fakeEnv) pop(l *[]error) error {
	if len(*l) == 0 {
		return nil
	}
	e := (*l)[0]
	*l = (*l)[1:]
	return e
}

func (f *fakeEnv) log(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }

func (f *fakeEnv) Network(context.Context) error { f.log("network"); return f.pop(&f.netErrs) }
func (f *fakeEnv) Boot(context.Context) (*bootapi.Boot, error) {
	f.log("boot")
	if err := f.pop(&f.bootErrs); err != nil {
		return nil, err
	}
	return f.boot, nil
}
func (f *fakeEnv) Choose(_ context.Context, b *bootapi.Boot, note string) (*bootapi.OS, error) {
	f.log("menu")
	f.chooseLog = append(f.chooseLog, note)
	if len(f.choices) == 0 {
		return nil, errors.New("test: no more choices")
	}
	c := f.choices[0]
	f.choices = f.choices[1:]
	if c == "" {
		return nil, nil
	}
	for i := range b.Menu {
		if b.Menu[i].Name == c {
			return &b.Menu[i], nil
		}
	}
	return nil, errors.New("test: bad choice")
}
func (f *fakeEnv) Download(_ context.Context, _ *bootapi.Boot, o *bootapi.OS) (downloader, error) {
	f.log("download " + o.Name)
	if err := f.pop(&f.dlErrs); err != nil {
		return nil, err
	}
	return &fakeDL{size: o.Size}, nil
}
func (f *fakeEnv) Start(_ context.Context, o *bootapi.OS, _ *Fetched, dl downloader) error {
	f.log("start " + o.Name)
	dl.Close()
	f.started = append(f.started, o.Name)
	return f.pop(&f.startErrs)
}
func (f *fakeEnv) Report(_ context.Context, r *bootapi.Report) error {
	f.mu.Lock()
	f.reports = append(f.reports, *r)
	f.mu.Unlock()
	return nil
}
func (f *fakeEnv) Shell(context.Context) { f.log("shell"); f.shells++ }

type fakeDL struct {
	size   int64
	closed bool
}

func (d *fakeDL) Wait(context.Context) (*Fetched, error) {
	return &Fetched{Dir: "/x", Bytes: d.size}, nil
}
func (d *fakeDL) Progress() Progress {
	return Progress{Total: d.size, Done: d.size, FromPeers: d.size / 2, FromSeeder: d.size - d.size/2}
}
func (d *fakeDL) Seed(context.Context, time.Duration) {}
func (d *fakeDL) Close()                              { d.closed = true }

func testBoot() *bootapi.Boot {
	return &bootapi.Boot{DefaultOS: "b", TimeoutMS: 5000, ReportMS: 1000, Menu: []bootapi.OS{
		{Name: "a", DispName: "A", Method: "kexec", Size: 100},
		{Name: "b", DispName: "B", Method: "bin", Size: 200},
	}}
}

func newTestMachine(f *fakeEnv, cfg *Config) (*machine, *strings.Builder, *strings.Builder) {
	var console, result strings.Builder
	if cfg == nil {
		cfg = &Config{Server: "http://s", MAC: "52:54:00:00:00:01"}
	}
	m := &machine{env: f, cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), console: &console, result: &result,
		now: time.Now, sleep: func(context.Context, time.Duration) error { return nil }}
	return m, &console, &result
}

func TestMachine(t *testing.T) {
	netErr := errors.New("no carrier")
	for _, tc := range []struct {
		name        string
		env         *fakeEnv
		cfg         *Config
		wantErr     bool
		wantStarted []string
		wantCalls   string // the sequence of calls, space separated
		wantStages  []string
	}{
		{
			name:        "menu choice boots",
			env:         &fakeEnv{boot: testBoot(), choices: []string{"a"}},
			wantStarted: []string{"a"},
			wantCalls:   "network boot menu download a start a",
			wantStages:  []string{"network", "menu", "download", "booting"},
		},
		{
			name: "network and server failures are retried",
			env: &fakeEnv{boot: testBoot(), netErrs: []error{netErr, netErr}, bootErrs: []error{errors.New("connection refused")},
				choices: []string{"b"}},
			wantStarted: []string{"b"},
			wantCalls:   "network network network boot boot menu download b start b",
			wantStages:  []string{"failed", "failed", "network", "failed", "menu", "download", "booting"},
		},
		{
			name: "pinned OS skips the menu",
			env: &fakeEnv{boot: func() *bootapi.Boot {
				b := testBoot()
				b.PinnedOS, b.Machine = "a", "pc1"
				return b
			}()},
			wantStarted: []string{"a"},
			wantCalls:   "network boot download a start a",
		},
		{
			name: "pinned OS missing from the menu shows the menu",
			env: &fakeEnv{boot: func() *bootapi.Boot {
				b := testBoot()
				b.PinnedOS = "gone"
				return b
			}(), choices: []string{"b"}},
			wantStarted: []string{"b"},
			wantCalls:   "network boot menu download b start b",
		},
		{
			name: "zero timeout boots the default at once",
			env: &fakeEnv{boot: func() *bootapi.Boot {
				b := testBoot()
				b.TimeoutMS = 0
				return b
			}()},
			wantStarted: []string{"b"},
			wantCalls:   "network boot download b start b",
		},
		{
			name:        "--os skips the menu",
			env:         &fakeEnv{boot: testBoot()},
			cfg:         &Config{Server: "http://s", MAC: "52:54:00:00:00:01", OS: "a"},
			wantStarted: []string{"a"},
			wantCalls:   "network boot download a start a",
		},
		{
			name:      "--os not in the menu gives up after the attempts",
			env:       &fakeEnv{boot: testBoot()},
			cfg:       &Config{Server: "http://s", MAC: "52:54:00:00:00:01", OS: "zzz", MaxAttempts: 2},
			wantErr:   true,
			wantCalls: "network boot boot",
		},
		{
			name:        "kexec failure returns to the menu with the reason",
			env:         &fakeEnv{boot: testBoot(), choices: []string{"a", "b"}, startErrs: []error{errors.New("kexec_file_load: invalid argument")}},
			wantStarted: []string{"a", "b"},
			wantCalls:   "network boot menu download a start a boot menu download b start b",
			wantStages:  []string{"network", "menu", "download", "booting", "failed", "menu", "download", "booting"},
		},
		{
			name:        "download failure returns to the menu",
			env:         &fakeEnv{boot: testBoot(), choices: []string{"a", "a"}, dlErrs: []error{errors.New("torrent: 404")}},
			wantStarted: []string{"a"},
			wantCalls:   "network boot menu download a boot menu download a start a",
		},
		{
			name:        "rescue shell then back to the menu",
			env:         &fakeEnv{boot: testBoot(), choices: []string{"", "b"}},
			wantStarted: []string{"b"},
			wantCalls:   "network boot menu shell boot menu download b start b",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, console, result := newTestMachine(tc.env, tc.cfg)
			err := m.run(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("run: %v, want error %v\nconsole:\n%s", err, tc.wantErr, console)
			}
			if got := strings.Join(tc.env.calls, " "); got != tc.wantCalls {
				t.Errorf("calls:\n got %s\nwant %s", got, tc.wantCalls)
			}
			if strings.Join(tc.env.started, ",") != strings.Join(tc.wantStarted, ",") {
				t.Errorf("started %v, want %v", tc.env.started, tc.wantStarted)
			}
			if tc.wantStages != nil {
				var got []string
				for _, r := range tc.env.reports {
					got = append(got, r.Stage)
				}
				if strings.Join(got, " ") != strings.Join(tc.wantStages, " ") {
					t.Errorf("reported stages:\n got %v\nwant %v", got, tc.wantStages)
				}
			}
			for _, r := range tc.env.reports {
				if r.Stage == bootapi.StageFailed && (r.Message == "" || !strings.Contains(r.Message, "check:")) {
					t.Errorf("failure report without what to check: %+v", r)
				}
			}
			if !tc.wantErr && !strings.HasPrefix(result.String(), ResultPrefix) {
				t.Errorf("no result line: %q", result.String())
			}
		})
	}
}

// TestMachineFailureNote: the menu shown again says what failed.
func TestMachineFailureNote(t *testing.T) {
	f := &fakeEnv{boot: testBoot(), choices: []string{"a", "b"}, startErrs: []error{errors.New("kexec_file_load: exec format error")}}
	m, console, _ := newTestMachine(f, nil)
	if err := m.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.chooseLog) != 2 || f.chooseLog[0] != "" || !strings.Contains(f.chooseLog[1], "exec format error") {
		t.Errorf("menu notes %q", f.chooseLog)
	}
	if !strings.Contains(console.String(), "!! booting a (kexec) failed: kexec_file_load: exec format error; check:") {
		t.Errorf("console:\n%s", console)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
}

// reportDL is a download in progress whose Progress carries the report
// interval of the last Peers answer.
type reportDL struct {
	fakeDL
	every time.Duration
}

func (d *reportDL) Progress() Progress {
	return Progress{Total: 100, Done: 50, ReportEvery: d.every}
}

// While downloading, watch reports at the interval of the last Peers
// answer when there is one, else at the Boot answer's.
func TestWatchReportInterval(t *testing.T) {
	b := testBoot()
	b.ReportMS = 10
	for _, c := range []struct {
		every    time.Duration
		min, max int
	}{{0, 5, 60}, {time.Hour, 0, 0}} {
		f := &fakeEnv{}
		m, _, _ := newTestMachine(f, nil)
		m.tick = 5 * time.Millisecond
		dl := &reportDL{every: c.every}
		m.watch(context.Background(), b, &b.Menu[0], bootapi.StageDownload, dl, func(context.Context) (*Fetched, error) {
			time.Sleep(300 * time.Millisecond)
			return &Fetched{}, nil
		})
		time.Sleep(20 * time.Millisecond) // the last report's goroutine
		f.mu.Lock()
		n := len(f.reports)
		f.mu.Unlock()
		if n < c.min || n > c.max {
			t.Errorf("Peers interval %s, Boot interval 10ms: %d reports in 300 ms, want %d–%d", c.every, n, c.min, c.max)
		}
	}
}

// Reports and peer-list refreshes are spread over a quarter either side
// of their interval, so a class switched on at once does not ask the
// server in the same second every time.
func TestJittered(t *testing.T) {
	const d = 10 * time.Second
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 1000 {
		j := jittered(d)
		lo, hi = min(lo, j), max(hi, j)
	}
	if lo < d*3/4 || hi > d*5/4 {
		t.Errorf("jittered(%s) ranged %s–%s, want within 7.5–12.5 s", d, lo, hi)
	}
	if lo > 8*time.Second || hi < 12*time.Second {
		t.Errorf("jittered(%s) ranged only %s–%s in 1000 draws: not spread over the interval", d, lo, hi)
	}
	if jittered(0) != 0 {
		t.Errorf("jittered(0) = %s, want 0 (the first peer-list request goes at once)", jittered(0))
	}
}
