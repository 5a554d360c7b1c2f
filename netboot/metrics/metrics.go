// Package metrics is the appliance's Prometheus endpoint (bootapi
// .PathMetrics): counters the server's parts feed through small hooks
// (dhcp.Meter, tftpd transfers, registry.Hooks, an HTTP byte counter the
// command wraps around every route) and values read from the parts at
// scrape time (machines by stage, the seeder's upload, tracker announces).
// Names start with boottorrent_, use base units (bytes, seconds), and
// counters end in _total; no label carries a MAC or an IP (per-machine
// detail is the JSON API's). It decides nothing about the machines and
// must not be imported by the protocol packages, which only define the
// hooks it implements.
//
// The exposition is written by hand: the server binary is also every
// client's /init, and prometheus/client_golang added 2.44 MB to it
// (VictoriaMetrics/metrics 192 KB); this package adds a few KB. Tests
// check the output with Prometheus's own parser.
package metrics

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/tftpd"
)

// Sources are what is read from the parts at scrape time; each may be nil.
type Sources struct {
	// Machines is the registry's snapshot (machines by stage).
	Machines func() []bootapi.Machine
	// SeederUploaded is the seeder's payload bytes sent per OS.
	SeederUploaded func() map[string]int64
	// Announces are the tracker's announces over HTTP and UDP.
	Announces func() (http, udp uint64)
}

// Stages are the values of the stage label, so that every stage has a
// series from the first scrape.
var Stages = []string{bootapi.StageDHCP, bootapi.StageTFTP, bootapi.StageIPXE, bootapi.StageClient,
	bootapi.StageNetwork, bootapi.StageMenu, bootapi.StageDownload, bootapi.StageSeeding, bootapi.StageBooting,
	bootapi.StageFailed, bootapi.StageLost}

// Metrics holds the counters. Its methods are safe for concurrent use and
// never block on I/O.
type Metrics struct {
	version string
	src     Sources

	dhcpPackets  *vec
	dhcpAnswer   *histogram
	dhcpDropped  *vec
	tftp         *vec
	httpBytes    *vec
	payload      *vec
	stageSeconds *histogram
	failures     *vec
}

// New returns empty counters; version goes into boottorrent_build_info.
// Set the Sources with Read before serving.
func New(version string) *Metrics {
	return &Metrics{version: version,
		dhcpPackets: newVec("boottorrent_dhcp_packets_total", "counter",
			"DHCP packets received (direction in) and sent (out), by message type and mode.", "direction", "type", "mode"),
		dhcpAnswer: newHistogram("boottorrent_dhcp_answer_seconds",
			"Time from a DHCP request's arrival to its answer being sent.",
			[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
		dhcpDropped: newVec("boottorrent_dhcp_dropped_total", "counter",
			"DHCP packets dropped unanswered, by reason.", "reason"),
		tftp: newVec("boottorrent_tftp_transfers_total", "counter",
			"TFTP transfers, by result (ok, size_query, not_found, busy, error).", "result"),
		httpBytes: newVec("boottorrent_http_sent_bytes_total", "counter",
			"HTTP body bytes sent, by kind of route.", "kind"),
		payload: newVec("boottorrent_payload_bytes_total", "counter",
			"OS payload bytes the machines received, by source (peers, seeder, webseed), summed from their reports.", "source"),
		stageSeconds: newHistogram("boottorrent_stage_duration_seconds",
			"Time machines spent in a boot stage, observed when they leave it.",
			[]float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800}, "stage"),
		failures: newVec("boottorrent_machine_failures_total", "counter",
			"Machines that failed (their client reported an error) or were lost (stopped reporting), by the stage they were in.", "stage", "verdict"),
	}
}

// Read sets what is read from the parts at scrape time. Call it before
// the first scrape: the parts that feed the counters are built after the
// counters, and these sources after the parts.
func (m *Metrics) Read(src Sources) { m.src = src }

// Received counts a DHCP request (dhcp.Meter).
func (m *Metrics) Received(msgType, mode string) {
	m.dhcpPackets.add(1, "in", dhcpType(msgType), mode)
}

// Answered counts a DHCP reply sent took after its request arrived
// (dhcp.Meter).
func (m *Metrics) Answered(msgType, mode string, took time.Duration) {
	m.dhcpPackets.add(1, "out", dhcpType(msgType), mode)
	m.dhcpAnswer.observe(took.Seconds())
}

// Dropped counts a DHCP packet dropped unanswered (dhcp.Meter).
func (m *Metrics) Dropped(reason string) { m.dhcpDropped.add(1, reason) }

// dhcpType maps a message type onto the label's fixed set.
func dhcpType(t string) string {
	t = strings.ToLower(t)
	switch t {
	case "discover", "offer", "request", "decline", "ack", "nak", "release", "inform":
		return t
	}
	return "other"
}

// TFTPTransfer counts a finished TFTP transfer.
func (m *Metrics) TFTPTransfer(t tftpd.Transfer) {
	result := "ok"
	switch {
	case t.SizeQuery:
		result = "size_query"
	case errors.Is(t.Err, tftpd.ErrNotFound):
		result = "not_found"
	case errors.Is(t.Err, tftpd.ErrBusy):
		result = "busy"
	case t.Err != nil:
		result = "error"
	}
	m.tftp.add(1, result)
}

// Stage records a machine's stage change (registry.Hooks.Stage): the time
// it spent in the stage it left, and a failure when it failed or was lost.
func (m *Metrics) Stage(from, to string, in time.Duration) {
	if from != "" && from != bootapi.StageLost && in > 0 {
		m.stageSeconds.observe(in.Seconds(), from)
	}
	if (to == bootapi.StageFailed || to == bootapi.StageLost) && from != to {
		m.failures.add(1, from, to)
	}
}

// Payload adds the bytes a report added (registry.Hooks.Payload).
func (m *Metrics) Payload(fromPeers, fromSeeder, fromWeb, _ int64) {
	m.payload.add(uint64(fromPeers), "peers")
	m.payload.add(uint64(fromSeeder), "seeder")
	m.payload.add(uint64(fromWeb), "webseed")
}

// CountHTTP wraps h to count the body bytes it sends as kind.
func (m *Metrics) CountHTTP(kind string, h http.Handler) http.Handler {
	c := m.httpBytes.with(kind)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		c.Add(uint64(cw.n))
	})
}

// Register adds /metrics through handle.
func (m *Metrics) Register(handle func(pattern string, h http.Handler, control bool)) {
	handle("GET "+bootapi.PathMetrics, m, false)
}

// ServeHTTP writes the exposition.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(w, 16<<10)
	defer bw.Flush()
	header(bw, "boottorrent_build_info", "gauge", "The running boottorrent's version (value 1).")
	bw.WriteString("boottorrent_build_info" + labelSet([]string{"version", "goversion"}, []string{m.version, runtime.Version()}, "", "") + " 1\n")
	m.dhcpPackets.write(bw)
	m.dhcpAnswer.write(bw)
	m.dhcpDropped.write(bw)
	m.tftp.write(bw)
	m.httpBytes.write(bw)
	if f := m.src.SeederUploaded; f != nil {
		v := map[string]float64{}
		for os, n := range f() {
			v[os] = float64(n)
		}
		gauge(bw, "boottorrent_seeder_uploaded_bytes_total", "counter", "BitTorrent payload bytes the seeder sent, by OS.", "os", v)
	}
	if f := m.src.Announces; f != nil {
		h, u := f()
		gauge(bw, "boottorrent_tracker_announces_total", "counter", "Tracker announces, by protocol.", "protocol",
			map[string]float64{"http": float64(h), "udp": float64(u)})
	}
	if f := m.src.Machines; f != nil {
		v := make(map[string]float64, len(Stages))
		for _, s := range Stages {
			v[s] = 0
		}
		for _, mc := range f() {
			v[mc.Stage]++
		}
		gauge(bw, "boottorrent_machines", "gauge", "Machines known, by stage (failed and lost included).", "stage", v)
	}
	m.payload.write(bw)
	m.stageSeconds.write(bw)
	m.failures.write(bw)
}

// countingWriter counts the body bytes written, keeping the writer's
// sendfile path (ReadFrom) and http.ResponseController (Unwrap).
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := readFrom(c.ResponseWriter, r)
	c.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (flushes,
// deadlines).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
