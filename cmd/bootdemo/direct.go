package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/boottorrent/boottorrent/netboot"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/vm"
)

// The demo OS's files as the project holds them (writeProject) and its
// command line, the same for the boot client's kexec and for the direct
// baseline.
const (
	demoKernel = "vmlinuz"
	demoInitrd = "initrd.img"
)

func demoCmdline() string { return "console=ttyS0,115200 quiet " + vm.GuestArgs }

// directScript is the iPXE script of the baseline: the demo OS's kernel
// and initrd straight from base over HTTP, with the command line the boot
// client would kexec it with. Debian's iPXE on UEFI hands the kernel its
// initrd only when the command line names it (initrd=<name>).
func directScript(base string) string {
	return "#!ipxe\n" +
		fmt.Sprintf("kernel %s/demo/%s initrd=%s %s\n", base, demoKernel, demoInitrd, demoCmdline()) +
		fmt.Sprintf("initrd --name %s %s/demo/%s\n", demoInitrd, base, demoInitrd) +
		"boot\n"
}

// directServer is what a plain iPXE setup runs on the server's address
// once boottorrent has stopped: DHCP (our dhcp package in full mode, the
// same range), the router advertisements that end iPXE's IPv6 router
// discovery (as boottorrent sends them), and an HTTP server with the boot
// script and the demo OS's two files. So the two chains differ only in
// what comes after iPXE's script: boottorrent's boot client, menu,
// BitTorrent download and kexec, against nothing.
type directServer struct {
	http    *http.Server
	dhcp    *dhcp.Server
	conns   []net.PacketConn
	ra      *netboot.RouterAdverts
	served  chan error // Serve's result, once it runs
	serving bool

	closeOnce sync.Once
}

// startDirect starts the baseline's servers inside ns, on serverAddr,
// serving the files of osDir.
func startDirect(ns *netns.NS, serverAddr netip.Prefix, osDir string, log *slog.Logger) (*directServer, error) {
	base := "http://" + serverAddr.Addr().String() + ":8080"
	first, last := dhcpRange()
	d, err := dhcp.New(dhcp.Options{
		Mode: dhcp.ModeFull, Interface: "eth0", ServerIP: serverAddr.Addr(), Prefix: serverAddr.Masked(),
		First: first, Last: last, HTTPBase: base, // no TFTP: only iPXE ROMs (run refuses uefi-pxe)
		Logger: log.With("part", "dhcp"),
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		log.Info("boot script", "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, directScript(base))
	})
	for _, f := range []string{demoKernel, demoInitrd} {
		path := filepath.Join(osDir, f)
		mux.HandleFunc("GET /demo/"+f, func(w http.ResponseWriter, r *http.Request) {
			log.Info("file", "name", f, "remote", r.RemoteAddr)
			http.ServeFile(w, r, path)
		})
	}
	s := &directServer{http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, dhcp: d, served: make(chan error, 1)}
	var ln net.Listener
	err = ns.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(serverAddr.Addr().String(), "8080")); err != nil {
			return err
		}
		for _, port := range []int{dhcp.ServerPort, dhcp.PXEServerPort} {
			c, err := dhcp.Listen("eth0", port)
			if err != nil {
				return err
			}
			s.conns = append(s.conns, c)
		}
		s.ra, err = netboot.StartRouterAdverts("eth0", func(string) bool { return true }, log,
			func(msg string, args ...any) { log.Warn(msg, args...) })
		return err
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		s.close()
		return nil, err
	}
	s.serving = true
	go func() { s.served <- d.Serve(s.conns[0], s.conns[1]) }()
	go s.http.Serve(ln)
	return s, nil
}

// close stops every part that was started; only the first call does.
func (s *directServer) close() error {
	var err error
	s.closeOnce.Do(func() { err = s.stop() })
	return err
}

func (s *directServer) stop() error {
	var errs []error
	if s.http != nil {
		errs = append(errs, s.http.Close())
	}
	if s.ra != nil {
		errs = append(errs, s.ra.Close())
	}
	errs = append(errs, s.dhcp.Close())
	for _, c := range s.conns {
		c.Close()
	}
	if s.serving {
		<-s.served
	}
	return errors.Join(errs...)
}

// dhcpRange is the demo's lease range: the project's dhcp.range
// (writeProject) and the direct baseline's.
func dhcpRange() (netip.Addr, netip.Addr) {
	return netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.199")
}

// rangeText is dhcpRange as Boottorrent.yaml writes it.
func rangeText() string {
	first, last := dhcpRange()
	return first.String() + "-" + last.String()
}

// ratioLine compares one machine's two chains.
func ratioLine(name string, bt, direct time.Duration) string {
	return fmt.Sprintf("%-8s boottorrent %.1f s, iPXE loading the OS directly %.1f s: %.2f×", name, bt.Seconds(), direct.Seconds(),
		bt.Seconds()/direct.Seconds())
}

// directName is a baseline machine's name: its firmware's, marked.
func directName(fw vm.Firmware) string { return strings.TrimSpace(string(fw)) + "-direct" }
