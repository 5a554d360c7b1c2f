package metrics

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/registry"
	"github.com/boottorrent/boottorrent/netboot/tftpd"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics and parses it with Prometheus's own parser.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", bootapi.PathMetrics, nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("not valid exposition: %v\n%s", err, rec.Body.String())
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "boottorrent_") {
			t.Errorf("%s: not prefixed boottorrent_", name)
		}
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if n := l.GetName(); n == "mac" || n == "ip" {
					t.Errorf("%s has a per-machine label %s", name, n)
				}
			}
		}
	}
	return fams
}

// value is the series of fam with the labels (name=value pairs).
func value(t *testing.T, fams map[string]*dto.MetricFamily, fam string, labels ...string) float64 {
	t.Helper()
	f := fams[fam]
	if f == nil {
		t.Fatalf("no %s", fam)
	}
outer:
	for _, m := range f.Metric {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue outer
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.Counter.GetValue()
		case dto.MetricType_GAUGE:
			return m.Gauge.GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("%s: no series %v", fam, labels)
	return 0
}

// What the parts report comes out as counters that match it, in valid
// exposition, through the same hooks the appliance wires.
func TestExpositionMatchesEvents(t *testing.T) {
	mt := New("v1.2.3")
	clock := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	reg := registry.New(registry.Options{Now: func() time.Time { return clock },
		Hooks: registry.Hooks{Stage: mt.Stage, Payload: mt.Payload}})
	mt.Read(Sources{Machines: reg.Snapshot,
		SeederUploaded: func() map[string]int64 { return map[string]int64{"debian": 1 << 20} },
		Announces:      func() (uint64, uint64) { return 3, 4 }})

	// DHCP: a DORA exchange in full mode, a proxy exchange, drops.
	for _, typ := range []string{"discover", "request"} {
		mt.Received(typ, "full")
	}
	mt.Answered("offer", "full", 2*time.Millisecond)
	mt.Answered("ack", "full", 3*time.Millisecond)
	mt.Received("discover", "proxy")
	mt.Answered("offer", "proxy", time.Millisecond)
	mt.Dropped("malformed")
	mt.Dropped("queue_full")
	mt.Dropped("queue_full")
	mt.TFTPTransfer(tftpd.Transfer{Bytes: 100})
	mt.TFTPTransfer(tftpd.Transfer{SizeQuery: true})
	mt.TFTPTransfer(tftpd.Transfer{Err: tftpd.ErrNotFound})

	// Two machines download 1000 bytes each; one restarts its client
	// halfway (its counters start again from zero); one fails.
	ip := netip.MustParseAddr("10.0.0.9")
	reg.Observe("52:54:00:00:00:01", ip, "bios", bootapi.StageDHCP)
	clock = clock.Add(3 * time.Second)
	rep := func(mac, stage string, peers, seeder, web int64) {
		reg.Report(ip, &bootapi.Report{MAC: mac, Stage: stage, OS: "debian", BytesTotal: 1000,
			BytesDone: peers + seeder + web, FromPeers: peers, FromSeeder: seeder, FromWeb: web})
		clock = clock.Add(time.Second)
	}
	rep("52:54:00:00:00:01", bootapi.StageDownload, 100, 200, 0)
	rep("52:54:00:00:00:01", bootapi.StageDownload, 400, 600, 0)
	rep("52:54:00:00:00:01", bootapi.StageBooting, 400, 600, 0)
	rep("52:54:00:00:00:02", bootapi.StageDownload, 300, 0, 0)
	rep("52:54:00:00:00:02", bootapi.StageDownload, 100, 0, 50) // restarted: +150
	rep("52:54:00:00:00:02", bootapi.StageFailed, 100, 0, 50)

	rec := httptest.NewRecorder()
	mt.CountHTTP("webseed", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(strings.Repeat("x", 5000)))
	})).ServeHTTP(rec, httptest.NewRequest("GET", "/oss/x", nil))

	fams := scrape(t, mt)
	for _, c := range []struct {
		fam    string
		labels []string
		want   float64
	}{
		{"boottorrent_build_info", []string{"version", "v1.2.3"}, 1},
		{"boottorrent_dhcp_packets_total", []string{"direction", "in", "type", "discover", "mode", "full"}, 1},
		{"boottorrent_dhcp_packets_total", []string{"direction", "out", "type", "ack", "mode", "full"}, 1},
		{"boottorrent_dhcp_packets_total", []string{"direction", "out", "type", "offer", "mode", "proxy"}, 1},
		{"boottorrent_dhcp_answer_seconds", nil, 3},
		{"boottorrent_dhcp_dropped_total", []string{"reason", "queue_full"}, 2},
		{"boottorrent_tftp_transfers_total", []string{"result", "ok"}, 1},
		{"boottorrent_tftp_transfers_total", []string{"result", "size_query"}, 1},
		{"boottorrent_tftp_transfers_total", []string{"result", "not_found"}, 1},
		{"boottorrent_http_sent_bytes_total", []string{"kind", "webseed"}, 5000},
		{"boottorrent_seeder_uploaded_bytes_total", []string{"os", "debian"}, 1 << 20},
		{"boottorrent_tracker_announces_total", []string{"protocol", "udp"}, 4},
		{"boottorrent_machines", []string{"stage", "booting"}, 1},
		{"boottorrent_machines", []string{"stage", "failed"}, 1},
		{"boottorrent_machines", []string{"stage", "download"}, 0},
		{"boottorrent_payload_bytes_total", []string{"source", "peers"}, 400 + 300 + 100},
		{"boottorrent_payload_bytes_total", []string{"source", "seeder"}, 600},
		{"boottorrent_payload_bytes_total", []string{"source", "webseed"}, 50},
		{"boottorrent_stage_duration_seconds", []string{"stage", "dhcp"}, 1},
		{"boottorrent_stage_duration_seconds", []string{"stage", "download"}, 2},
		{"boottorrent_machine_failures_total", []string{"stage", "download", "verdict", "failed"}, 1},
	} {
		if got := value(t, fams, c.fam, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.fam, c.labels, got, c.want)
		}
	}
	// The DHCP stage lasted 3 s: its histogram's sum says so.
	for _, m := range fams["boottorrent_stage_duration_seconds"].Metric {
		if m.Label[0].GetValue() == "dhcp" && m.Histogram.GetSampleSum() != 3 {
			t.Errorf("dhcp stage sum %v, want 3", m.Histogram.GetSampleSum())
		}
	}
}

// A label value with quotes, backslashes and newlines (an OS name) stays
// valid exposition.
func TestLabelEscaping(t *testing.T) {
	mt := New(`v"1\` + "\n")
	mt.Read(Sources{SeederUploaded: func() map[string]int64 { return map[string]int64{"a\"b\\c\nd": 1} }})
	fams := scrape(t, mt)
	if v := value(t, fams, "boottorrent_seeder_uploaded_bytes_total", "os", "a\"b\\c\nd"); v != 1 {
		t.Errorf("escaped os label: %v", v)
	}
}
