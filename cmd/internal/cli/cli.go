// Package cli is boottorrent's command line: init, check, start, status, version
// and the hidden client entry. cmd/boottorrent's main only calls Main.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sort"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/oss"
)

// Version is set at build time with -ldflags "-X .../cli.Version=v1.2.3";
// otherwise it comes from the module's build info.
var Version = ""

// Env is what a command may touch; tests replace every part.
type Env struct {
	Stdout, Stderr io.Writer
	Host           config.Host
	// Getwd is the folder commands use when --dir is not given.
	Getwd func() (string, error)
	// InfoHashes returns OS name → info hash for the OSes whose hash
	// cache is fresh, and ClientSummary describes the boot client
	// (kernel + initramfs sizes, whether it is built); check prints
	// both without hashing or building anything. nil: the seeder's
	// cache and the built client's files; tests give fixed answers.
	InfoHashes    func(*config.Project) map[string]string
	ClientSummary func(*config.Project) string
}

type command struct {
	name    string
	summary string
	usage   string
	hidden  bool
	run     func(env *Env, args []string) error
}

func commands() []command {
	return []command{
		{name: "init", summary: "create a project folder: a commented Boottorrent.yaml and oss/",
			usage: "boottorrent init DIR", run: runInit},
		{name: "check", summary: "validate the project and print what start would do",
			usage: "boottorrent check [--dir DIR]", run: runCheck},
		{name: "add", summary: "add an OS from a distribution's ISO image",
			usage: "boottorrent add [--dir DIR] FILE.iso NAME", run: runAdd},
		{name: "sign", summary: "sign an OS: a minisign-signed manifest that start and every booting machine check",
			usage: "boottorrent sign oss/NAME --key SECRET [--version V]", run: runSign},
		{name: "keygen", summary: "make a minisign key pair for sign",
			usage: "boottorrent keygen --out PREFIX", run: runKeygen},
		{name: "start", summary: "run the appliance: DHCP, TFTP, HTTP, tracker and seeder",
			usage: "boottorrent start [--dir DIR] [--log-level LEVEL]", run: runStart},
		{name: "status", summary: "show the machines booting: summary and table, --watch to follow",
			usage: "boottorrent status [--watch] [--server URL]", run: runStatus},
		{name: "version", summary: "print the version", usage: "boottorrent version", run: runVersion},
		{name: "client", hidden: true, summary: "the boot client (runs as /init on booting machines)",
			usage: "boottorrent client [flags]", run: runClient},
	}
}

// errUsage makes Main exit 2 without printing the error twice.
var errUsage = errors.New("usage")

// Main runs the command line and returns the exit code.
func Main(args []string, env *Env) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			return Main([]string{args[1], "--help"}, env)
		}
		usage(env.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(env, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintf(env.Stderr, "boottorrent %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(env.Stderr, "boottorrent: unknown command %q\n\n", args[0])
	usage(env.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `boottorrent boots a lab's diskless machines over the network: PXE (proxy or
full DHCP, TFTP, HTTP), a boot menu, and the chosen OS over BitTorrent from
the server and from the other booting machines.

Usage:
  boottorrent COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, `
Quick start:
  boottorrent init lab      # then copy a kernel + initrd into lab/oss/NAME/,
  boottorrent add --dir lab debian-live-12.8.0-amd64-standard.iso debian   # or add an ISO
  cd lab && boottorrent check
  sudo boottorrent start

Run 'boottorrent COMMAND --help' for a command's flags.
`)
}

// newFlags makes a flag set whose --help prints the command's usage.
func newFlags(env *Env, name, usageLine, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stdout, "Usage: %s\n\n%s\n", usageLine, about)
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(env.Stdout, "\nFlags:")
			fs.SetOutput(env.Stdout)
			fs.PrintDefaults()
			fs.SetOutput(env.Stderr)
		}
	}
	return fs
}

// parse parses flags, mapping a parse error to errUsage (the flag package
// has printed it already).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func runVersion(env *Env, args []string) error {
	fs := newFlags(env, "version", "boottorrent version", "Prints the version of this boottorrent binary.")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "boottorrent %s\n", versionString())
	return nil
}

func versionString() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return fmt.Sprintf("%s (%s%s, %s)", v, rev, dirty, bi.GoVersion)
	}
	return fmt.Sprintf("%s (%s)", v, bi.GoVersion)
}

func runInit(env *Env, args []string) error {
	fs := newFlags(env, "init", "boottorrent init DIR",
		`Creates a project folder DIR with a commented Boottorrent.yaml (the detected
LAN interface and address filled in) and an oss/ folder with a README on how
to add an operating system. Refuses to overwrite an existing project.`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(env.Stderr, "boottorrent init: name the folder to create, e.g. boottorrent init lab")
		return errUsage
	}
	dir := fs.Arg(0)
	iface, addr := config.DetectLAN(env.Host)
	if err := config.Init(dir, iface, addr); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Created %s/%s and %s/oss/.\n", dir, config.FileName, dir)
	if iface != "" {
		fmt.Fprintf(env.Stdout, "Serving on %s (%s) by default, with proxy DHCP next to your network's DHCP server.\n", iface, addr)
	} else {
		fmt.Fprintln(env.Stdout, "No LAN interface with an IPv4 address was found: set server.interface and server.address.")
	}
	fmt.Fprintf(env.Stdout, `Next:
  1. add an OS: boottorrent add --dir %[1]s FILE.iso NAME (from a distribution's
     ISO), or mkdir %[1]s/oss/NAME, copy its kernel and initrd there, and
     write %[1]s/oss/NAME/config.yaml (see %[1]s/oss/README.md)
  2. cd %[1]s && boottorrent check
  3. sudo boottorrent start
`, dir)
	return nil
}

// projectDir returns --dir or the working folder.
func projectDir(env *Env, dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	return env.Getwd()
}

// newLogger makes the administrator's log: one line per event, to stderr
// (in the journal's format when stderr is the journal).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	if toJournal(w) {
		return slog.New(journalHandler(w, l)), nil
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// DefaultEnv is the real machine.
func DefaultEnv() *Env {
	return &Env{Stdout: os.Stdout, Stderr: os.Stderr, Host: config.RealHost(), Getwd: os.Getwd}
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// humanBytes is how the commands write a size: the one spelling the
// appliance uses (oss.SizeText).
func humanBytes(n int64) string { return oss.SizeText(n) }
