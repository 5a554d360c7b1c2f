package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns"
)

const about = `swarmbench builds an emulated LAN on this machine (one server namespace and
N client namespaces on a bridge, every link shaped with tc), runs the real
'boottorrent start' (full DHCP) with a generated OS of --size random bytes,
starts N real boot clients at once ('boottorrent client --no-kexec'), and
measures the time until all hold the OS. On the same links it then runs the
baseline: the same N clients downloading the same files over plain HTTP
from the same server ('boottorrent client --http'). It reports, per N, the
times, the fluid lower bound T* = max(S/u_server, S/d_min,
N·S/(u_server + Σ u_clients)), server egress per image byte, the share of
bytes clients got from peers, and the machine's peak CPU and memory; a case
is marked invalid when the machine was more than 60 % busy.

Writes report.md, report.json and swarm.svg (and logs/) into --out.
Needs root, iproute2 (ip, tc) and ethtool. Everything it creates is
removed at the end and on Ctrl-C.

Example (the README's table):
  go build -o /tmp/boottorrent ./cmd/boottorrent
  go build -o /tmp/swarmbench ./cmd/swarmbench
  sudo /tmp/swarmbench --boottorrent /tmp/boottorrent --clients 1,10,20 \
      --size 32MiB --rate 20mbit --out /tmp/swarmbench-out`

// Main is the command line; it returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("swarmbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: swarmbench [flags]\n\n%s\n\nFlags:\n", about)
		fs.PrintDefaults()
	}
	clients := fs.String("clients", "1,10,20", "client counts to run, comma-separated")
	size := fs.String("size", "32MiB", "image size (KiB, MiB, GiB; KB, MB, GB)")
	rate := fs.String("rate", "20mbit", "rate of every link, both directions (tc units: kbit, mbit, gbit)")
	serverRate := fs.String("server-rate", "", "rate of the server's link (default: --rate)")
	latency := fs.String("latency", "0", "added round-trip time between two hosts, e.g. 2ms (each of the 4 queues on the way adds a quarter; needs sch_netem in the kernel)")
	loss := fs.String("loss", "0%", "packet loss on each direction of every client link")
	congestion := fs.String("congestion", DefaultCongestion, "TCP congestion control of every emulated host: Linux's default, which the boot client's kernel and a Debian server use ('' keeps this machine's own default)")
	offload := fs.Bool("offload", true, "keep segmentation offloads (TSO/GSO) on every veth, as a real NIC has them: the emulation then takes less of this machine's CPU; off by itself with --loss (loss must hit Ethernet-sized packets)")
	jsonOut := fs.Bool("json", false, "print the report as JSON instead of the table")
	out := fs.String("out", "swarmbench-out", "folder for report.md, report.json, swarm.svg and logs")
	bt := fs.String("boottorrent", "", "the boottorrent binary (default: boottorrent next to swarmbench, then in PATH)")
	engine := fs.String("engine", EngineBoottorrent, "what runs on the LAN: boottorrent (the product); lab (anacrolix/torrent alone with the product's settings, fixed addresses, peers handed over directly: what the library does on these links); harness (no BitTorrent, the HTTP baseline with the harness's own server and client: tests the emulation)")
	labSpread := fs.Bool("lab-spread", false, "lab engine: each leecher wants its own 1/N of the pieces first")
	labPiece := fs.String("lab-piece", "256KiB", "piece length of the lab engine's torrent")
	noHTTP := fs.Bool("no-http", false, "skip the HTTP baseline (quicker when tuning)")
	repeat := fs.Int("repeat", 1, "run each case's BitTorrent phase this many times and report the run with the median all-done time (the HTTP baseline runs once); times on a shared machine vary from run to run")
	profile := fs.Bool("profile", false, "write a CPU profile of every boottorrent client into the logs folder (tuning)")
	clientEnv := fs.String("client-env", "", "extra environment for every boottorrent client, space-separated NAME=value (tuning), e.g. GOMAXPROCS=1")
	clientNice := fs.Int("client-nice", DefaultClientNice, "scheduling niceness of every client process, 0 (the same as the server) to 19: on a host the clients saturate, a higher value leaves the server the CPU a real boot server has to itself (TUNING.md, 2026-11-24)")
	seed := fs.Duration("seed-time", 5*time.Second, "how long clients seed after completing (boot.seed_time)")
	timeout := fs.Duration("timeout", 0, "limit for each phase of a case (default: 10 × T* + 90 s for BitTorrent, 3 × the HTTP bound + 90 s for HTTP)")
	level := fs.String("log-level", "info", "log detail: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "swarmbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "swarmbench: --log-level %q: use debug, info, warn or error\n", *level)
		return 2
	}
	o := Options{Out: *out, SeedTime: *seed, Timeout: *timeout, SkipHTTP: *noHTTP, Profile: *profile,
		Log:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
		Command: "swarmbench " + strings.Join(args, " ")}
	var errs []error
	var err error
	for _, kv := range strings.Fields(*clientEnv) {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			errs = append(errs, fmt.Errorf("--client-env: %q is not NAME=value", kv))
		} else {
			o.ClientEnv = append(o.ClientEnv, kv)
		}
	}
	parseInto(&errs, &o.Clients, ParseClients, *clients)
	parseInto(&errs, &o.Size, ParseSize, *size)
	parseInto(&errs, &o.Rate, ParseRate, *rate)
	o.ServerRate = o.Rate
	if *serverRate != "" {
		parseInto(&errs, &o.ServerRate, ParseRate, *serverRate)
	}
	parseInto(&errs, &o.Latency, ParseLatency, *latency)
	parseInto(&errs, &o.Loss, ParseLoss, *loss)
	o.Congestion = *congestion
	if o.ClientNice = *clientNice; o.ClientNice < 0 || o.ClientNice > 19 {
		errs = append(errs, fmt.Errorf("--client-nice %d: use 0 (no change) to 19 (lowest priority)", *clientNice))
	}
	o.Offload = *offload && o.Loss == 0
	if *offload && o.Loss > 0 && flagSet(fs, "offload") {
		errs = append(errs, errors.New("--offload with --loss: a lost GSO packet would be up to 64 KiB of segments; leave --offload out for lossy links (it is off by itself then)"))
	}
	if o.Repeat = *repeat; o.Repeat < 1 {
		errs = append(errs, fmt.Errorf("--repeat %d: at least 1", *repeat))
	}
	if o.Congestion != "" {
		if err := CheckCongestion(o.Congestion); err != nil {
			errs = append(errs, err)
		}
	}
	if o.SeedTime < 0 {
		errs = append(errs, errors.New("--seed-time must not be negative"))
	}
	if o.Self, err = os.Executable(); err != nil {
		errs = append(errs, err)
	}
	o.Engine = *engine
	o.LabSpread = *labSpread
	switch o.Engine {
	case EngineBoottorrent:
		if o.Boottorrent, err = findBoottorrent(*bt, o.Self); err != nil {
			errs = append(errs, err)
		}
	case EngineLab:
		if o.LabPiece, err = ParseSize(*labPiece); err != nil || o.LabPiece < 16<<10 || o.LabPiece&(o.LabPiece-1) != 0 {
			errs = append(errs, fmt.Errorf("--lab-piece %q: a power of two of at least 16KiB", *labPiece))
		}
	case EngineHarness:
	default:
		errs = append(errs, fmt.Errorf("--engine %q: use boottorrent, lab or harness", *engine))
	}
	if err := netns.Available(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && o.Latency > 0 {
		if err := CheckDelay(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "swarmbench: %v\n", errors.Join(errs...))
		return 2
	}
	if total := o.ServerRate + float64(o.Clients[len(o.Clients)-1])*o.Rate; total/8 > 60e6 {
		o.Log.Warn("emulated capacity above 60 MB/s: the machine will probably saturate and the case be invalid; lower --rate",
			"total_MBps", round(total/8/1e6))
	}

	// Ctrl-C, SIGTERM, a closed terminal (SIGHUP) and a closed output
	// pipe (SIGPIPE: 'swarmbench | head' after head has exited; Go
	// would otherwise end the program at the next log line) cancel the
	// run; the deferred clean-ups then remove every namespace (killing
	// what runs inside) and put back the host-wide settings.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer stop()
	netns.Sweep()
	defer netns.Sweep()

	rep, runErr := Run(ctx, o)
	if rep == nil {
		fmt.Fprintf(stderr, "swarmbench: %v\n", runErr)
		return 1
	}
	if err := writeOutputs(rep, o.Out); err != nil {
		fmt.Fprintf(stderr, "swarmbench: %v\n", err)
		return 1
	}
	if *jsonOut {
		rep.WriteJSON(stdout)
	} else {
		rep.WriteTable(stdout)
		fmt.Fprintf(stdout, "written: %s, %s, %s\n", filepath.Join(o.Out, "report.md"), filepath.Join(o.Out, "report.json"), filepath.Join(o.Out, "swarm.svg"))
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "swarmbench: %v\n", runErr)
		return 1
	}
	for _, c := range rep.Cases {
		if len(c.Errors) > 0 {
			return 1
		}
	}
	return 0
}

// findBoottorrent resolves --boottorrent.
func findBoottorrent(flagVal, self string) (string, error) {
	hint := "build it with 'go build -o /tmp/boottorrent ./cmd/boottorrent' and pass --boottorrent /tmp/boottorrent (or --engine harness to test the emulation alone)"
	if flagVal != "" {
		p, err := exec.LookPath(flagVal)
		if err != nil {
			return "", fmt.Errorf("--boottorrent %s: %v; %s", flagVal, err, hint)
		}
		return filepath.Abs(p)
	}
	if p := filepath.Join(filepath.Dir(self), "boottorrent"); isExec(p) {
		return p, nil
	}
	if p, err := exec.LookPath("boottorrent"); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("no boottorrent binary found; %s", hint)
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func writeOutputs(rep *Report, dir string) error {
	var md, js, svg bytes.Buffer
	rep.WriteTable(&md)
	if err := rep.WriteJSON(&js); err != nil {
		return err
	}
	if err := rep.WriteSVG(&svg); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"report.md": md.Bytes(), "report.json": js.Bytes(), "swarm.svg": svg.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseInto sets *dst to what parse reads from s and keeps its error in
// errs, so that one run of the command names every bad option at once.
func parseInto[T any](errs *[]error, dst *T, parse func(string) (T, error), s string) {
	v, err := parse(s)
	*dst = v
	if err != nil {
		*errs = append(*errs, err)
	}
}
