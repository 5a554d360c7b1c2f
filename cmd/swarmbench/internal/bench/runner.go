package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
