package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

func runCheck(env *Env, args []string) error {
	fs := newFlags(env, "check", "boottorrent check [--dir DIR]",
		`Validates Boottorrent.yaml and every oss/*/config.yaml, reports every problem
at once (file, line, field, fix), and prints the plan: interface, address,
DHCP mode, the boot menu, each OS with its method, size and info hash.
Exits 1 when the project is invalid.`)
	dir := fs.String("dir", "", "project folder (default: the current folder)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(env.Stderr, "boottorrent check: unexpected argument %q (use --dir DIR)\n", fs.Arg(0))
		return errUsage
	}
	p, err := loadProject(env, *dir, func(w string) { fmt.Fprintf(env.Stderr, "warning: %s\n", w) })
	if err != nil {
		return err
	}
	printPlan(env.Stdout, p, env.infoHashes(), env.clientSummary())
	fmt.Fprintln(env.Stdout, "\nThe project is valid. Start it with: sudo boottorrent start")
	return nil
}

// printPlan prints what start would do, for people. hashes and summary
// read what other packages know without running them (Env.InfoHashes,
// Env.ClientSummary).
func printPlan(w io.Writer, p *config.Project, hashes func(*config.Project) map[string]string, summary func(*config.Project) string) {
	c := p.Config
	fmt.Fprintf(w, "Project   %s\n", p.Dir)
	fmt.Fprintf(w, "Server    %s, address %s (network %s)\n", c.Server.Interface, c.Server.Address, p.Prefix)
	fmt.Fprintf(w, "HTTP      %s  (iPXE script, boot client, API, web seed, tracker)\n", c.HTTPBase())
	fmt.Fprintf(w, "Torrents  port %d (BitTorrent TCP, tracker UDP)\n", c.Server.TorrentPort)
	switch c.DHCP.Mode {
	case config.DHCPProxy:
		fmt.Fprintln(w, "DHCP      proxy: answers PXE firmware only; the site's DHCP server hands out addresses")
	case config.DHCPFull:
		fmt.Fprintf(w, "DHCP      full: leases %s to %s for %s", c.DHCP.First, c.DHCP.Last, c.DHCP.LeaseTime)
		if c.DHCP.Router != "" {
			fmt.Fprintf(w, ", router %s", c.DHCP.Router)
		}
		if len(c.DHCP.DNS) > 0 {
			fmt.Fprintf(w, ", DNS %s", strings.Join(c.DHCP.DNS, " "))
		}
		fmt.Fprintln(w)
	case config.DHCPOff:
		fmt.Fprintln(w, "DHCP      off: point your DHCP server's PXE boot file at us (see README)")
	}
	if c.TFTP.Enabled {
		fmt.Fprintf(w, "TFTP      on: %s from %s (BIOS), %s (UEFI)\n", c.IPXE.BIOS, c.IPXE.Dir, c.IPXE.UEFI)
	} else {
		fmt.Fprintln(w, "TFTP      off: only firmware that is iPXE already can boot")
	}
	timeout := c.Boot.Timeout.String()
	switch {
	case c.Boot.Timeout.Duration < 0:
		timeout = "waits for a choice"
	case c.Boot.Timeout.Duration == 0:
		timeout = "boots the default at once"
	}
	fmt.Fprintf(w, "Menu      %s; default %s; timeout %s; seed %s after download\n",
		strings.Join(c.Boot.Menu, ", "), c.Boot.DefaultOS, timeout, c.Boot.SeedTime)
	fmt.Fprintf(w, "Client    kernel %s, modules %s\n", c.Client.Kernel, c.Client.Modules)
	if s := summary(p); s != "" {
		fmt.Fprintf(w, "          %s\n", s)
	}
	known := hashes(p)
	fmt.Fprintf(w, "\nOperating systems (%d):\n", len(p.OSes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tMETHOD\tSIZE\tMIN RAM\tFILES\tINFO HASH\tDISPLAY NAME")
	for _, o := range p.OSes {
		h := known[o.Name]
		if h == "" {
			h = "(hashed at start)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", o.Name, o.Method, humanBytes(o.Size), humanBytes(bootapi.MinRAM(o.Size)), len(o.Files), h, o.DispName)
	}
	tw.Flush()
	fmt.Fprintf(w, "  (MIN RAM: a diskless machine needs about %.1f x the OS's size + %s of RAM to boot it; %.1f x on UEFI machines and under Secure Boot)\n",
		bootapi.RAMFactor, humanBytes(bootapi.RAMOverhead), bootapi.RAMFactorLockdown)
	for _, o := range p.OSes {
		if len(o.InitrdFiles) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %s receives in its initramfs, after %s:\n", o.Name, o.Initrd)
		for _, f := range o.InitrdFiles {
			fmt.Fprintf(w, "    %s  <-  %s\n", f.As, f.File)
		}
	}
	printTrust(w, p, known)
	if len(c.Machines) > 0 {
		fmt.Fprintf(w, "\nMachines (%d):\n", len(c.Machines))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, mac := range sortedKeys(c.Machines) {
			m := c.Machines[mac]
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", mac, m.Name, m.OS)
		}
		tw.Flush()
	}
}

// loadProject loads and validates the project in dir (default: the
// working folder), passing each warning to warn. Invalid projects give an
// error that counts the problems and lists each one.
func loadProject(env *Env, dir string, warn func(string)) (*config.Project, error) {
	d, err := projectDir(env, dir)
	if err != nil {
		return nil, err
	}
	p, err := config.LoadProject(d, env.Host)
	if p != nil {
		for _, w := range p.Warnings {
			warn(w)
		}
	}
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			return nil, fmt.Errorf("%s in %s (fix them, then run boottorrent check):\n%w", plural(len(ps), "problem", "problems"), d, err)
		}
		return nil, err
	}
	return p, nil
}
