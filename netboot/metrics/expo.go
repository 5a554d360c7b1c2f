package metrics

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The Prometheus text exposition format (version 0.0.4), written by hand:
// counters, gauges and histograms with fixed label names is all the
// appliance needs, and a library would add to every client's /init (see
// the package doc).

// vec is a family of counters (or gauges) by label values. Label values
// come from small fixed sets (stages, DHCP types, OS names from the
// project); callers map anything from the wire onto such a set first.
type vec struct {
	name, help, typ string
	labels          []string
	mu              sync.Mutex
	v               map[string]*atomic.Uint64 // joined label values → value
}

func newVec(name, typ, help string, labels ...string) *vec {
	return &vec{name: name, typ: typ, help: help, labels: labels, v: map[string]*atomic.Uint64{}}
}

func (c *vec) with(values ...string) *atomic.Uint64 {
	k := strings.Join(values, "\x00")
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.v[k]
	if x == nil {
		x = new(atomic.Uint64)
		c.v[k] = x
	}
	return x
}

// add adds n to the series of values.
func (c *vec) add(n uint64, values ...string) { c.with(values...).Add(n) }

func (c *vec) write(w io.Writer) {
	header(w, c.name, c.typ, c.help)
	c.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(c.v)) {
		fmt.Fprintf(w, "%s%s %d\n", c.name, labelSet(c.labels, strings.Split(k, "\x00"), "", ""), c.v[k].Load())
	}
	c.mu.Unlock()
}

// histogram is a family of histograms with fixed buckets.
type histogram struct {
	name, help string
	labels     []string
	buckets    []float64 // upper bounds, ascending; +Inf implied
	mu         sync.Mutex
	series     map[string]*hseries
}

type hseries struct {
	counts []atomic.Uint64 // per bucket, not cumulative; last is +Inf
	sum    atomic.Uint64   // float64 bits
}

func newHistogram(name, help string, buckets []float64, labels ...string) *histogram {
	return &histogram{name: name, help: help, buckets: buckets, labels: labels, series: map[string]*hseries{}}
}

// observe records v (in the base unit) for the label values.
func (h *histogram) observe(v float64, values ...string) {
	k := strings.Join(values, "\x00")
	h.mu.Lock()
	s := h.series[k]
	if s == nil {
		s = &hseries{counts: make([]atomic.Uint64, len(h.buckets)+1)}
		h.series[k] = s
	}
	h.mu.Unlock()
	i := sort.SearchFloat64s(h.buckets, v) // first bound >= v
	s.counts[i].Add(1)
	for {
		old := s.sum.Load()
		if s.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (h *histogram) write(w io.Writer) {
	header(w, h.name, "histogram", h.help)
	h.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(h.series)) {
		s, values := h.series[k], strings.Split(k, "\x00")
		if len(h.labels) == 0 {
			values = nil
		}
		var cum uint64
		for i, b := range h.buckets {
			cum += s.counts[i].Load()
			fmt.Fprintf(w, "%s_bucket%s %d\n", h.name, labelSet(h.labels, values, "le", formatFloat(b)), cum)
		}
		cum += s.counts[len(h.buckets)].Load()
		fmt.Fprintf(w, "%s_bucket%s %d\n", h.name, labelSet(h.labels, values, "le", "+Inf"), cum)
		fmt.Fprintf(w, "%s_sum%s %s\n", h.name, labelSet(h.labels, values, "", ""), formatFloat(math.Float64frombits(s.sum.Load())))
		fmt.Fprintf(w, "%s_count%s %d\n", h.name, labelSet(h.labels, values, "", ""), cum)
	}
	h.mu.Unlock()
}

func header(w io.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// gauge writes one family of gauges (or counters read from elsewhere)
// from values by label value, sorted.
func gauge(w io.Writer, name, typ, help, label string, values map[string]float64) {
	header(w, name, typ, help)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if label == "" {
			fmt.Fprintf(w, "%s %s\n", name, formatFloat(values[k]))
			continue
		}
		fmt.Fprintf(w, "%s{%s=%s} %s\n", name, label, quote(k), formatFloat(values[k]))
	}
}

// labelSet formats {a="x",b="y"} with an extra pair when extraName is set.
func labelSet(names, values []string, extraName, extraValue string) string {
	if len(names) == 0 && extraName == "" {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		v := ""
		if i < len(values) {
			v = values[i]
		}
		b.WriteString(n + "=" + quote(v))
	}
	if extraName != "" {
		if len(names) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(extraName + "=" + quote(extraValue))
	}
	b.WriteByte('}')
	return b.String()
}

// quote escapes a label value as the format requires (backslash, quote,
// newline).
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
