package main

import (
	"bufio"
	"fmt"
	"strings"
	"time"
)

// manPage makes boottorrent(1) in roff from the binary's own help text:
// `boottorrent help` for the overview and the command list, then
// `boottorrent COMMAND --help` for each command, so the page never
// disagrees with the binary it is packaged with.
func manPage(binary, version string, when time.Time) ([]byte, error) {
	top, err := help(binary, "help")
	if err != nil {
		return nil, err
	}
	intro, cmds := splitUsage(top)
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%s help: no \"Commands:\" list in its output", binary)
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".TH BOOTTORRENT 1 %q %q \"User Commands\"\n", when.Format("2006-01-02"), "boottorrent "+version)
	b.WriteString(".SH NAME\nboottorrent \\- network\\-boot appliance: PXE, then the OS over BitTorrent\n")
	b.WriteString(".SH SYNOPSIS\n.B boottorrent\n.I COMMAND\n.RI [ flags ]\n")
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(paragraphs(intro))
	b.WriteString(".SH COMMANDS\n")
	for _, c := range cmds {
		text, err := help(binary, c, "--help")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, ".SS %s\n.nf\n%s.fi\n", escape(c), verbatim(text))
	}
	b.WriteString(`.SH SERVICE
The Debian package runs
.B boottorrent start \-\-dir /var/lib/boottorrent
as the system user
.I boottorrent
from
.IR boottorrent.service ,
with only the capabilities CAP_NET_BIND_SERVICE (DHCP and TFTP ports) and
CAP_NET_RAW (IPv6 router advertisements), a read\-only file system but for
/var/lib/boottorrent, and only once /var/lib/boottorrent/Boottorrent.yaml
exists. Its log is in the journal:
.B journalctl \-u boottorrent
.SH FILES
.TP
.I /var/lib/boottorrent/Boottorrent.yaml
the service's project; its OSes are in
.IR /var/lib/boottorrent/oss/ .
.TP
.I /var/lib/boottorrent/out/
what boottorrent generates: DHCP leases, hash cache, torrents, the boot
client's initramfs. Purging the package removes it; the project stays.
.TP
.I /usr/share/doc/boottorrent/examples/lab/
a sample project.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.I /usr/share/doc/boottorrent/README.md.gz
`)
	return []byte(b.String()), nil
}

// splitUsage returns the overview's text before "Usage:" and the command
// names listed under "Commands:".
func splitUsage(top string) (intro string, cmds []string) {
	before, after, _ := strings.Cut(top, "\nUsage:")
	intro = before
	_, list, ok := strings.Cut(after, "Commands:\n")
	if !ok {
		return intro, nil
	}
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "  ") {
			break
		}
		if f := strings.Fields(line); len(f) > 0 {
			cmds = append(cmds, f[0])
		}
	}
	return intro, cmds
}

// escape makes text safe in roff: a backslash is \e, a minus is \- (a
// hyphen would be typeset as one), and a line may not start with a
// control character.
func escape(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// verbatim escapes preformatted text, ending it with a newline.
func verbatim(s string) string {
	s = escape(strings.TrimRight(s, "\n"))
	return s + "\n"
}

// paragraphs turns blank-line separated text into .PP paragraphs.
func paragraphs(s string) string {
	var b strings.Builder
	for _, p := range strings.Split(strings.TrimSpace(s), "\n\n") {
		b.WriteString(".PP\n" + escape(strings.TrimSpace(p)) + "\n")
	}
	return b.String()
}
