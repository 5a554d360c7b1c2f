package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// series is one line of the plot.
type series struct {
	name, color, dash string
	y                 func(c *Case) float64
}

// WriteSVG draws completion time against the number of clients for
// boottorrent, plain HTTP, and the two lower bounds, as a self-contained
// SVG (no scripts, no external fonts) that renders on GitHub.
func (r *Report) WriteSVG(w io.Writer) error {
	const (
		width, height            = 720, 440
		left, right, top, bottom = 70, 190, 40, 60
	)
	ss := []series{
		{"boottorrent", "#1f77b4", "", func(c *Case) float64 { return c.AllCompleteS }},
		{"plain HTTP", "#d62728", "", func(c *Case) float64 { return c.HTTPAllCompleteS }},
		{"T* (swarm bound)", "#2ca02c", "6,4", func(c *Case) float64 { return c.BoundS }},
		{"HTTP bound N·S/u", "#ff7f0e", "2,4", func(c *Case) float64 { return c.HTTPBoundS }},
	}
	maxN, maxY := 1.0, 1.0
	for i := range r.Cases {
		c := &r.Cases[i]
		maxN = math.Max(maxN, float64(c.Clients))
		for _, s := range ss {
			maxY = math.Max(maxY, s.y(c))
		}
	}
	maxY = niceCeil(maxY)
	pw, ph := float64(width-left-right), float64(height-top-bottom)
	x := func(n float64) float64 { return left + n/maxN*pw }
	y := func(v float64) float64 { return top + ph - v/maxY*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := "Time until all clients hold the image"
	if len(r.Cases) > 0 {
		c := r.Cases[0]
		title += fmt.Sprintf(" (%s, %s links)", FormatBytes(float64(c.SizeBytes)), FormatRate(c.RateBps))
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	// Axes and grid.
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), x(maxN), y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	for _, c := range r.Cases {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(c.Clients)), top+int(ph)+18, c.Clients)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="black"/>`+"\n", left, top, left, top+ph)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top+ph, x(maxN), top+ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">clients (N)</text>`+"\n", left+pw/2, height-18)
	fmt.Fprintf(&b, `<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">seconds</text>`+"\n", top+ph/2, top+ph/2)
	for i, s := range ss {
		var pts []string
		for j := range r.Cases {
			c := &r.Cases[j]
			if v := s.y(c); v > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(c.Clients)), y(v)))
			}
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], s.color)
			}
		}
		ly := top + 10 + i*20
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", width-right+15, ly, width-right+40, ly, s.color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", width-right+46, ly+4, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so the axis has
// round labels.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
