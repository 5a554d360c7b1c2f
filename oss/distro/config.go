package distro

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/boottorrent/boottorrent/oss"
)

// Source describes the medium a plan was made from, for config.yaml's
// comment.
type Source struct {
	File     string // the ISO's file name (base name)
	VolumeID string
	Size     int64
}

// Config renders the OS folder's config.yaml: a comment saying what was
// detected and from what, then the keys. dispname is the menu entry.
func (p *Plan) Config(src Source, dispname string) []byte {
	var b strings.Builder
	c := func(format string, args ...any) {
		for _, line := range wrap(clean(fmt.Sprintf(format, args...)), 76) {
			b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
		}
	}
	first := fmt.Sprintf("Written by 'boottorrent add' from %s (%s", src.File, oss.SizeText(src.Size))
	if src.VolumeID != "" {
		first += fmt.Sprintf(", volume id %q", src.VolumeID)
	}
	c("%s).", first)
	c("Detected: %s (%s).", p.Family.ID, p.Family.Name)
	c("Kernel %s, initrd %s.", p.Kernel, p.Initrd)
	if len(p.InitrdFiles) > 0 {
		c("initrd_files: the boot client appends these files to the initrd, under")
		c("%s unless 'as' says otherwise, and the command line tells the", Prefix)
		c("distribution's initramfs where they are: %s.", p.Family.Source)
	}
	if p.WholeISO != "" {
		c("%s is the whole medium, copied as it is.", p.WholeISO)
	}
	for _, g := range p.Generated {
		c("%s %s.", g.Path, g.Why)
	}
	for _, n := range p.Notes {
		c("%s", n)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "dispname: %s\n", yamlString(dispname))
	b.WriteString("method: kexec\n")
	fmt.Fprintf(&b, "kernel: %s\n", yamlString(p.Kernel))
	fmt.Fprintf(&b, "initrd: %s\n", yamlString(p.Initrd))
	if p.Cmdline != "" {
		fmt.Fprintf(&b, "cmdline: %s\n", yamlString(p.Cmdline))
	}
	if len(p.InitrdFiles) > 0 {
		b.WriteString("initrd_files:\n")
		for _, f := range p.InitrdFiles {
			if f.As == "" {
				fmt.Fprintf(&b, "  - %s\n", yamlString(f.File))
			} else {
				fmt.Fprintf(&b, "  - file: %s\n    as: %s\n", yamlString(f.File), yamlString(f.As))
			}
		}
	}
	return []byte(b.String())
}

// plainRe is what YAML reads as a plain string without quotes here.
var plainRe = regexp.MustCompile(`^[A-Za-z0-9_./][A-Za-z0-9_./+=: -]*$`)

// yamlString writes s as a YAML scalar: plain when that reads back as the
// same string, else double-quoted (Go's escapes are YAML's).
func yamlString(s string) string {
	if plainRe.MatchString(s) && !strings.HasSuffix(s, " ") && !strings.Contains(s, ": ") && !strings.HasSuffix(s, ":") &&
		!reserved[strings.ToLower(s)] {
		return s
	}
	return strconv.Quote(s)
}

var reserved = map[string]bool{"true": true, "false": true, "yes": true, "no": true, "on": true, "off": true,
	"null": true, "~": true, "y": true, "n": true}

// clean makes text from the medium safe in a comment line: YAML allows
// only printable characters there, and a line break would end the comment.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) && r != ' ' || r == utf8.RuneError || r == '\uFEFF' {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// DisplayName turns a volume id into a menu entry, or "" when it is not
// usable (empty, or not one printable line of at most 80 characters).
func DisplayName(volumeID string) string {
	s := strings.TrimSpace(volumeID)
	if s == "" || len(s) > 80 || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return ""
	}
	return s
}

// wrap breaks text into lines of at most width bytes at spaces (a longer
// word stays whole).
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
