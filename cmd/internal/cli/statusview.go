package cli

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dashboard"
	"github.com/boottorrent/boottorrent/netboot/registry"
)

// statusView draws the summary and the machine table as text.
type statusView struct {
	out   io.Writer
	color bool
	watch bool
	drawn time.Time
}

const (
	ansiRed   = "\x1b[31m"
	ansiAmber = "\x1b[33m"
	ansiBold  = "\x1b[1m"
	ansiReset = "\x1b[0m"
)

// show draws one frame; with --watch on a terminal it redraws in place, at
// most once a second.
func (v *statusView) show(ms []bootapi.Machine, s *dashboard.Summary, now time.Time) {
	if v.watch && time.Since(v.drawn) < time.Second && !v.drawn.IsZero() {
		return
	}
	v.drawn = time.Now()
	var b strings.Builder
	if v.watch && v.color {
		b.WriteString("\x1b[H\x1b[2J")
	}
	v.render(&b, ms, s, now)
	io.WriteString(v.out, b.String())
}

func (v *statusView) paint(code, s string) string {
	if !v.color || code == "" {
		return s
	}
	return code + s + ansiReset
}

// render writes the summary and the table.
func (v *statusView) render(b *strings.Builder, ms []bootapi.Machine, s *dashboard.Summary, now time.Time) {
	fmt.Fprintf(b, "%s  %d/%d booted", v.paint(ansiBold, "boottorrent"), s.Done, s.Total)
	if !s.FirstSeen.IsZero() {
		fmt.Fprintf(b, "  since first machine %s", now.Sub(s.FirstSeen).Round(time.Second))
	}
	if !s.ETA.IsZero() {
		fmt.Fprintf(b, "  finish in ~%s", s.ETA.Sub(now).Round(time.Second))
	}
	b.WriteString("\n")
	var st []string
	for _, name := range dashboard.Stages {
		if n := s.Stages[name]; n > 0 {
			item := fmt.Sprintf("%s %d", name, n)
			if name == bootapi.StageFailed || name == bootapi.StageLost {
				item = v.paint(ansiRed, item)
			}
			st = append(st, item)
		}
	}
	fmt.Fprintf(b, "stages: %s\n", strings.Join(st, ", "))
	fmt.Fprintf(b, "swarm: server %s/s, between machines %s/s, %.1f%% of the payload from peers\n",
		humanBytes(int64(s.ServerBps)), humanBytes(int64(s.PeersBps)), 100*s.PeerShare)
	for _, o := range s.OS {
		fmt.Fprintf(b, "  %s: %d downloading, %d seeding\n", clean(o.Name, 40), o.Downloading, o.Seeding)
	}
	b.WriteString("\n")
	dashboard.Order(ms)
	rows := [][]string{{"NAME", "MAC", "IP", "FIRMWARE", "OS", "STAGE", "PROGRESS", "PEERS", "SEEDER", "WEB", "UP", "CONN", "SEEN", "MESSAGE"}}
	paints := []string{""}
	for _, m := range ms {
		stage := m.Stage
		if m.Stage == bootapi.StageLost && m.LostFrom != "" {
			stage += " (" + m.LostFrom + ")"
		}
		if !m.StageSince.IsZero() {
			stage += " " + now.Sub(m.StageSince).Round(time.Second).String()
		}
		prog := ""
		if m.BytesTotal > 0 {
			prog = fmt.Sprintf("%3.0f%%", 100*m.Progress)
			if m.Stage == bootapi.StageDownload {
				prog += " " + humanBytes(int64(m.RateBps)) + "/s"
			}
		}
		age := now.Sub(m.LastSeen)
		paint := ""
		if dashboard.Pinned(&m) {
			paint = ansiRed
		} else if m.ReportMS > 0 && age > time.Duration(registry.ReportJitter*float64(m.ReportMS))*time.Millisecond {
			paint = ansiAmber
		}
		rows = append(rows, []string{clean(m.Name, 20), m.MAC, m.IP, clean(m.Arch, 12), clean(m.OS, 20), stage, prog,
			humanBytes(m.FromPeers), humanBytes(m.FromSeeder), humanBytes(m.FromWeb), humanBytes(m.Uploaded),
			fmt.Sprint(m.Peers), age.Round(time.Second).String(), clean(m.Message, 60)})
		paints = append(paints, paint)
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for i, r := range rows {
		var line strings.Builder
		for j, c := range r {
			if j == len(r)-1 {
				line.WriteString(c)
				break
			}
			line.WriteString(c + strings.Repeat(" ", widths[j]-utf8.RuneCountInString(c)+2))
		}
		b.WriteString(v.paint(paints[i], strings.TrimRight(line.String(), " ")) + "\n")
	}
}

// clean makes text a machine sent safe for a terminal (no control
// characters, which could move the cursor or change colours) and cuts it
// to n runes.
func clean(s string, n int) string {
	var b strings.Builder
	i := 0
	for _, r := range s {
		if i == n {
			b.WriteString("…")
			break
		}
		if unicode.IsControl(r) || r == utf8.RuneError {
			r = '?'
		}
		b.WriteRune(r)
		i++
	}
	return b.String()
}
