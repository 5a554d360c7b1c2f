// Command debpkg builds boottorrent's Debian package with nfpm from
// debian/nfpm.yaml: the static binary, the systemd unit, the sysusers.d
// entry, a man page made from the binary's --help, the README, the
// changelog, the copyright file and a sample project.
//
// It lives in its own module (tools/go.mod) so that nfpm and its ~127
// modules never reach the main module or the boottorrent binary. It knows
// nothing of boottorrent's code: it reads the built binary's help text.
//
//	go run ./debpkg --version 0.1.0 --arch amd64 --binary bin/boottorrent \
//	    --help-binary bin/boottorrent --out dist
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "debpkg: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "", "upstream version (from git describe), what `boottorrent version` prints")
	arch := flag.String("arch", "amd64", "Debian architecture: amd64 or arm64")
	binary := flag.String("binary", "", "the static boottorrent binary for --arch")
	helpBinary := flag.String("help-binary", "", "a boottorrent binary this machine runs, for the man page (default: --binary)")
	readme := flag.String("readme", "README.md", "the README to install")
	out := flag.String("out", "dist", "folder for the .deb")
	date := flag.String("date", "", "changelog date, RFC 3339 (default: SOURCE_DATE_EPOCH or now)")
	commit := flag.String("commit", "", "git commit, named in the changelog")
	maintainer := flag.String("maintainer", "boottorrent maintainers <maintainers@boottorrent.invalid>", "the Maintainer field")
	flag.Parse()
	if *version == "" || *binary == "" {
		return fmt.Errorf("--version and --binary are required")
	}
	if *helpBinary == "" {
		*helpBinary = *binary
	}
	kernel := map[string]string{"amd64": "linux-image-amd64", "arm64": "linux-image-arm64"}[*arch]
	if kernel == "" {
		return fmt.Errorf("--arch %q: use amd64 or arm64", *arch)
	}
	when, err := buildTime(*date)
	if err != nil {
		return err
	}
	here, err := sourceDir()
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "debpkg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)

	if err := copyFile(*binary, filepath.Join(stage, "boottorrent")); err != nil {
		return err
	}
	man, err := manPage(*helpBinary, *version, when)
	if err != nil {
		return err
	}
	rd, err := os.ReadFile(*readme)
	if err != nil {
		return err
	}
	debVersion := *version + "-1"
	gz := map[string][]byte{
		"boottorrent.1.gz":    man,
		"README.md.gz":        rd,
		"changelog.Debian.gz": changelog(debVersion, *commit, *maintainer, when),
	}
	for name, data := range gz {
		if err := writeGzip(filepath.Join(stage, name), data, when); err != nil {
			return err
		}
	}

	env := map[string]string{
		"VERSION": *version, "ARCH": *arch, "STAGE": stage,
		"DEBIAN": filepath.Join(here, "debian"), "KERNEL_PACKAGE": kernel,
		"MAINTAINER": *maintainer,
	}
	// Every ${NAME} is ours, expanded before nfpm reads the file: nfpm
	// itself expands only some fields.
	tmpl, err := os.ReadFile(filepath.Join(here, "debian", "nfpm.yaml"))
	if err != nil {
		return err
	}
	var missing []string
	text := os.Expand(string(tmpl), func(k string) string {
		v, ok := env[k]
		if !ok {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		return fmt.Errorf("debian/nfpm.yaml: unknown variables %v", missing)
	}
	cfg, err := nfpm.ParseWithEnvMapping(strings.NewReader(text), func(k string) string { return env[k] })
	if err != nil {
		return fmt.Errorf("debian/nfpm.yaml: %w", err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return err
	}
	info.MTime = when
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return fmt.Errorf("debian/nfpm.yaml: %w", err)
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	name := filepath.Join(*out, fmt.Sprintf("boottorrent_%s_%s.deb", debVersion, *arch))
	var buf bytes.Buffer
	if err := pkg.Package(info, &buf); err != nil {
		return fmt.Errorf("package: %w", err)
	}
	if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Println(name)
	return nil
}

// buildTime is the time stamped into the package: --date, else
// SOURCE_DATE_EPOCH (reproducible builds), else now.
func buildTime(date string) (time.Time, error) {
	if date != "" {
		t, err := time.Parse(time.RFC3339, date)
		if err != nil {
			return t, fmt.Errorf("--date %q: want RFC 3339, e.g. 2026-12-07T10:00:00Z", date)
		}
		return t.UTC(), nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Now().UTC().Truncate(time.Second), nil
}

// sourceDir is the folder of this program's sources (debian/ is beside
// them): the working folder's debpkg/ when run from tools/.
func sourceDir() (string, error) {
	for _, d := range []string{"debpkg", "tools/debpkg", "."} {
		if _, err := os.Stat(filepath.Join(d, "debian", "nfpm.yaml")); err == nil {
			return filepath.Abs(d)
		}
	}
	return "", fmt.Errorf("debian/nfpm.yaml not found: run from the repository or tools/")
}

// changelog is a one-entry Debian changelog (deb-changelog(5)): the
// package is built from git, whose log is the real history.
func changelog(version, commit, maintainer string, when time.Time) []byte {
	what := "Built from git"
	if commit != "" {
		what += " commit " + commit
	}
	return fmt.Appendf(nil, "boottorrent (%s) bookworm; urgency=medium\n\n  * %s.\n  * The changes are in the project's git log.\n\n -- %s  %s\n",
		version, what, maintainer, when.Format(time.RFC1123Z))
}

func writeGzip(path string, data []byte, when time.Time) error {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zw.ModTime = when
	zw.Write(data)
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// help runs the binary with args and returns what it printed; `help` exits
// 0, `COMMAND --help` too.
func help(binary string, args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", binary, strings.Join(args, " "), err)
	}
	return string(out), nil
}
