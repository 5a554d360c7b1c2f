package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs"
	"github.com/boottorrent/boottorrent/netboot"
	"github.com/boottorrent/boottorrent/netboot/metrics"
	"github.com/boottorrent/boottorrent/oss"
	"github.com/boottorrent/boottorrent/oss/manifest"
	"github.com/boottorrent/boottorrent/seeder"
	"github.com/boottorrent/boottorrent/seeder/btlan"
)

func runStart(env *Env, args []string) error {
	fs := newFlags(env, "start", "boottorrent start [--dir DIR] [--log-level LEVEL]",
		`Runs the appliance on server.interface until SIGINT or SIGTERM: DHCP (proxy
or full, ports 67 and 4011), TFTP (69), and one HTTP listener (iPXE script,
boot client, API, web seed, tracker), plus the seeder that serves every OS
over BitTorrent. Builds the boot client's initramfs and hashes the OSes
first (both cached under out/). DHCP and TFTP need root, or the
capabilities CAP_NET_BIND_SERVICE and CAP_NET_RAW.`)
	dir := fs.String("dir", "", "project folder (default: the current folder)")
	level := fs.String("log-level", "info", "log detail: debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(env.Stderr, "boottorrent start: unexpected argument %q (use --dir DIR)\n", fs.Arg(0))
		return errUsage
	}
	log, err := newLogger(env.Stderr, *level)
	if err != nil {
		return err
	}
	p, err := loadProject(env, *dir, func(w string) { log.Warn("configuration", "detail", w) })
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, p, log)
}

// appliance is what serve starts; closing it stops every part that was
// started, in reverse order, even after a failed start.
type appliance struct {
	log     *slog.Logger
	closers []func() error
	names   []string
}

func (a *appliance) onClose(name string, f func() error) {
	a.names = append(a.names, name)
	a.closers = append(a.closers, f)
}

func (a *appliance) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			a.log.Warn("stop", "part", a.names[i], "err", err)
		}
	}
	a.closers, a.names = nil, nil
}

// serve runs the appliance for a loaded project until ctx ends.
func serve(ctx context.Context, p *config.Project, log *slog.Logger) error {
	// The seeder's BitTorrent client reads the library's environment and
	// panics on a malformed value: say which one instead.
	if err := btlan.CheckTorrentEnv(); err != nil {
		return err
	}
	c := p.Config
	t0 := time.Now()
	a := &appliance{log: log}
	defer a.close()
	if err := os.MkdirAll(p.OutDir(), 0o755); err != nil {
		return fmt.Errorf("create %s for generated files: %w", p.OutDir(), err)
	}
	// Nothing in out/ is read or written before this lock is held.
	lock, err := lockOut(p.OutDir())
	if err != nil {
		return err
	}
	a.onClose("project lock", lock.unlock)

	// Bind the HTTP port first: a port taken is found before minutes of hashing.
	httpAddr := net.JoinHostPort(c.Server.Address, strconv.Itoa(c.Server.HTTPPort))
	ln, err := net.Listen("tcp4", httpAddr)
	if err != nil {
		return bindError("server.http_port", httpAddr, err)
	}
	a.onClose("http listener", func() error { ln.Close(); return nil })

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program's binary to pack as the client's /init: %w", err)
	}
	qemu := false
	for _, o := range p.OSes {
		if o.Method == oss.MethodQEMU {
			qemu = true
		}
	}
	trust, err := manifest.EncodeTrust(c.TrustSettings())
	if err != nil {
		return err
	}
	client, err := initramfs.Build(ctx, initramfs.Options{
		Kernel: c.Client.Kernel, Modules: c.Client.Modules, ExtraModules: c.Client.ExtraModules,
		Self: self, OutDir: p.OutDir(), QEMU: qemu, Trust: trust, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("build the boot client: %w", err)
	}

	sd, err := startSeeder(ctx, a, seeder.Options{Project: p, Logger: log})
	if err != nil {
		return err
	}

	nbo, err := netbootOptions(p)
	if err != nil {
		return err
	}
	mt := metrics.New(versionString())
	nbo.Logger, nbo.Catalog, nbo.ClientKernel, nbo.ClientInitramfs, nbo.Meter = log, sd, client.Kernel, client.Initramfs, mt
	nb, err := startNetboot(ctx, a, nbo)
	if err != nil {
		return err
	}
	mt.Read(metricSources(nb, sd))

	srv := &http.Server{
		Handler:           surface(mt, nb, sd, startDashboard(a, nb), mt),
		ConnContext:       netboot.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: web-seed and client downloads are large; the
		// handlers use idle deadlines instead of a total timeout.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.onClose("http", func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})

	log.Info("ready", "interface", c.Server.Interface, "address", c.Server.Address,
		"http", c.HTTPBase(), "dhcp", c.DHCP.Mode, "tftp", c.TFTP.Enabled,
		"oss", len(p.OSes), "startup", time.Since(t0).Round(time.Millisecond))
	select {
	case <-ctx.Done():
		log.Info("stopping", "reason", "signal")
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http listener: %w", err)
		}
	}
	a.close()
	log.Info("stopped")
	return nil
}

// startSeeder starts the seeder; its errors name the part once.
func startSeeder(ctx context.Context, a *appliance, o seeder.Options) (*seeder.Seeder, error) {
	sd, err := seeder.New(o)
	if err != nil {
		return nil, fmt.Errorf("seeder: %w", err)
	}
	a.onClose("seeder", sd.Close)
	if err := sd.Start(ctx); err != nil {
		// A corrupted OS is left out of the menu and not seeded; the
		// others still boot. Anything else stops the start.
		if !errors.Is(err, seeder.ErrCorrupt) && !errors.Is(err, seeder.ErrUntrusted) {
			return nil, fmt.Errorf("seeder: %w", err)
		}
		if errors.Is(err, seeder.ErrUntrusted) {
			a.log.Error("not serving an OS refused by trust.policy: fix or sign it (boottorrent check shows why) and restart", "err", err)
		}
		if !errors.Is(err, seeder.ErrCorrupt) {
			return sd, nil
		}
		a.log.Error("not serving a corrupted OS: its files changed on disk after they were hashed, or are damaged; replace them (or touch them to re-hash) and restart", "err", err)
	}
	return sd, nil
}

// startNetboot starts DHCP, TFTP and the router advertisements; its
// errors name the part once.
func startNetboot(ctx context.Context, a *appliance, o netboot.Options) (*netboot.Server, error) {
	nb, err := netboot.New(o)
	if err != nil {
		return nil, fmt.Errorf("netboot: %w", err)
	}
	a.onClose("netboot", nb.Close)
	if err := nb.Start(ctx); err != nil {
		return nil, fmt.Errorf("netboot: %w", err)
	}
	return nb, nil
}

// surface is the appliance's one HTTP surface: every part registers its
// own routes, marking the control-priority ones (netboot.Surface); mt
// counts the bytes each kind of route sends.
func surface(mt *metrics.Metrics, parts ...interface {
	Register(handle func(pattern string, h http.Handler, control bool))
}) *netboot.Surface {
	m := netboot.NewSurface()
	handle := func(pattern string, h http.Handler, control bool) {
		m.Handle(pattern, mt.CountHTTP(httpKind(pattern), h), control)
	}
	for _, p := range parts {
		p.Register(handle)
	}
	return m
}

// bindError turns a bind failure into advice naming the setting.
func bindError(field, addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s: %s is taken by another program (another boottorrent?); stop it or choose another port in %s", field, addr, config.FileName)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s: binding %s needs root or CAP_NET_BIND_SERVICE (sudo boottorrent start)", field, addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s: %s is not an address of this machine; fix server.address in %s", field, addr, config.FileName)
	}
	return fmt.Errorf("%s: listen on %s: %w", field, addr, err)
}
