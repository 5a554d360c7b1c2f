package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"32MiB", 32 << 20, false},
		{"32M", 32 << 20, false},
		{"4 MiB", 4 << 20, false},
		{"1.5GiB", 3 << 29, false},
		{"500MB", 500e6, false},
		{"1048576", 1 << 20, false},
		{"2kib", 2048, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"32XB", 0, true},
		{"0", 0, true},
		{"-1MiB", 0, true},
		{"2TiB", 0, true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		bad  bool
	}{
		{"20mbit", 20e6, false},
		{"20Mbit", 20e6, false},
		{"512kbit", 512e3, false},
		{"1gbit", 1e9, false},
		{"2mbps", 16e6, false}, // tc: bytes per second
		{"100000", 1e5, false},
		{"20 mbit", 0, true},
		{"fast", 0, true},
		{"1bit", 0, true},
		{"", 0, true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseRate(%q) = %g, %v; want %g, bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
	}
	if got := FormatRate(20e6); got != "20mbit" {
		t.Errorf("FormatRate(20e6) = %q", got)
	}
	if got := FormatRate(1500); got != "1500bit" {
		t.Errorf("FormatRate(1500) = %q", got)
	}
}

func TestParseLossLatencyClients(t *testing.T) {
	for in, want := range map[string]float64{"1%": 0.01, "0.5%": 0.005, "0": 0, "2": 0.02} {
		if got, err := ParseLoss(in); err != nil || math.Abs(got-want) > 1e-12 {
			t.Errorf("ParseLoss(%q) = %g, %v; want %g", in, got, err, want)
		}
	}
	for _, in := range []string{"-1%", "50%", "x", ""} {
		if _, err := ParseLoss(in); err == nil {
			t.Errorf("ParseLoss(%q) accepted", in)
		}
	}
	if d, err := ParseLatency("2ms"); err != nil || d != 2*time.Millisecond {
		t.Errorf("ParseLatency(2ms) = %v, %v", d, err)
	}
	if d, err := ParseLatency("0"); err != nil || d != 0 {
		t.Errorf("ParseLatency(0) = %v, %v", d, err)
	}
	if _, err := ParseLatency("2"); err == nil {
		t.Error("ParseLatency(2) accepted a number without unit")
	}
	got, err := ParseClients("20, 1,10,1")
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != 10 || got[2] != 20 {
		t.Errorf("ParseClients = %v, %v; want [1 10 20]", got, err)
	}
	for _, in := range []string{"", "0", "1,x", "100000", ","} {
		if _, err := ParseClients(in); err == nil {
			t.Errorf("ParseClients(%q) accepted", in)
		}
	}
}

func links(n int, server, client float64) Links {
	l := Links{ServerUp: server}
	for range n {
		l.ClientDown = append(l.ClientDown, client)
		l.ClientUp = append(l.ClientUp, client)
	}
	return l
}

func TestBound(t *testing.T) {
	const S = 32 << 20
	bits := float64(S * 8)
	for _, tc := range []struct {
		name           string
		l              Links
		want, wantHTTP float64
	}{
		// One client: the server's uplink and the client's downlink
		// are both S/rate; HTTP is the same.
		{"one client", links(1, 20e6, 20e6), bits / 20e6, bits / 20e6},
		// Ten equal clients: the N·S/(u_s+Σu) term is 10/11 of S/u,
		// so S/u (server must send one copy) dominates.
		{"ten equal", links(10, 20e6, 20e6), bits / 20e6, 10 * bits / 20e6},
		// Slow client uplinks: the aggregate upload is the limit.
		{"slow uplinks", Links{ServerUp: 20e6, ClientDown: []float64{20e6, 20e6, 20e6, 20e6}, ClientUp: []float64{1e6, 1e6, 1e6, 1e6}},
			4 * bits / 24e6, 4 * bits / 20e6},
		// A fast server and one slow downlink: d_min dominates.
		{"slow downlink", Links{ServerUp: 100e6, ClientDown: []float64{100e6, 10e6}, ClientUp: []float64{100e6, 100e6}},
			bits / 10e6, bits / 10e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Bound(S, tc.l)
			if err != nil || math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Bound = %g, %v; want %g", got, err, tc.want)
			}
			got, err = BoundHTTP(S, tc.l)
			if err != nil || math.Abs(got-tc.wantHTTP) > 1e-9 {
				t.Errorf("BoundHTTP = %g, %v; want %g", got, err, tc.wantHTTP)
			}
		})
	}
	for _, l := range []Links{{}, {ServerUp: 1}, links(2, 0, 1), links(2, 1, 0)} {
		if _, err := Bound(S, l); err == nil {
			t.Errorf("Bound(%+v) accepted", l)
		}
	}
}

func TestSpread(t *testing.T) {
	if s := SpreadOf([]float64{3, 1, 2}); s != (Spread{1, 2, 3}) {
		t.Errorf("odd: %+v", s)
	}
	if s := SpreadOf([]float64{4, 1, 2, 3}); s != (Spread{1, 2.5, 4}) {
		t.Errorf("even: %+v", s)
	}
	if s := SpreadOf(nil); s != (Spread{}) {
		t.Errorf("empty: %+v", s)
	}
}

func sampleReport() *Report {
	r := &Report{Command: "swarmbench --clients 1,10", Machine: Machine{CPU: "test cpu", Cores: 2, MemBytes: 1 << 30, Kernel: "6.1"}}
	c1 := Case{Clients: 1, SizeBytes: 32 << 20, RateBps: 20e6, ServerBps: 20e6, BoundS: 13.42, HTTPBoundS: 13.42,
		ServerEgressBytes: 34 << 20, SeederBytes: 32 << 20}
	c1.Finish([]float64{14.0}, []float64{14.1})
	c10 := Case{Clients: 10, SizeBytes: 32 << 20, RateBps: 20e6, ServerBps: 20e6, BoundS: 13.42, HTTPBoundS: 134.2,
		ServerEgressBytes: 40 << 20, PeerBytes: 270 << 20, SeederBytes: 50 << 20, WastedBytes: 80 << 20 / 10, CPUPeakBusy: 0.7,
		WastedSeederBytes: 3 << 20, Requests: 12000, RequestsWithdrawn: 1500, RequestsRejected: 600,
		Invalid: "invalid: machine saturated", HTTPServerEgressBytes: 330 << 20,
		ServerEgressKinds: EgressKinds{KindSeederData: {Bytes: 36 << 20, Packets: 25800}, KindSeederSmall: {Bytes: 2 << 20, Packets: 40000},
			KindHTTP: {Bytes: 2 << 20, Packets: 1500}, KindOther: {Bytes: 0, Packets: 0}},
		HTTPServerEgressKinds: EgressKinds{KindSeederData: {}, KindSeederSmall: {}, KindHTTP: {Bytes: 320 << 20, Packets: 230000}, KindOther: {Bytes: 4000, Packets: 12}}}
	c10.Finish([]float64{15, 16, 17, 16, 15, 16, 17, 16, 15, 18}, []float64{130, 135, 140, 135, 136, 137, 138, 139, 140, 141})
	c3 := Case{Clients: 3, SizeBytes: 32 << 20, RateBps: 20e6, ServerBps: 20e6, BoundS: 13.42, HTTPBoundS: 40.3,
		Errors: []string{"boottorrent client 2: did not complete in time"}}
	c3.Finish([]float64{15, 16}, nil)
	r.Cases = []Case{c1, c3, c10}
	r.SetFlatness()
	return r
}

func TestCaseFinish(t *testing.T) {
	r := sampleReport()
	c1, c3, c10 := r.Cases[0], r.Cases[1], r.Cases[2]
	if c1.AllCompleteS != 14 || math.Abs(c1.RatioToBound-14/13.42) > 1e-9 || math.Abs(c1.HTTPOverBoottorrent-14.1/14) > 1e-9 {
		t.Errorf("N=1: %+v", c1)
	}
	if c10.AllCompleteS != 18 || c10.ClientMinS != 15 || c10.ClientMedianS != 16 || c10.HTTPAllCompleteS != 141 {
		t.Errorf("N=10 times: %+v", c10)
	}
	if math.Abs(c10.PeerShare-270.0/320) > 1e-9 || math.Abs(c10.EgressPerImage-1.25) > 1e-9 {
		t.Errorf("N=10 shares: peer %g egress %g", c10.PeerShare, c10.EgressPerImage)
	}
	// A case where one client did not finish has no all-complete time
	// and no ratios, rather than the time of the clients that did.
	if c3.AllCompleteS != 0 || c3.RatioToBound != 0 || c3.Completed != 2 || c3.HTTPAllCompleteS != 0 {
		t.Errorf("N=3 incomplete: %+v", c3)
	}
	if math.Abs(r.Flatness-18.0/14) > 1e-9 {
		t.Errorf("flatness %g", r.Flatness)
	}
}

func TestReportJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []map[string]any `json:"cases"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	// The keys the issue promises to other tools.
	for _, k := range []string{"clients", "size_bytes", "all_complete_s", "bound_s", "http_all_complete_s", "server_egress_bytes", "peer_bytes"} {
		if _, ok := doc.Cases[2][k]; !ok {
			t.Errorf("JSON case lacks %q", k)
		}
	}
	if doc.Cases[2]["clients"] != 10.0 || doc.Cases[2]["all_complete_s"] != 18.0 || doc.Cases[2]["peer_bytes"] != float64(270<<20) {
		t.Errorf("JSON case 10: %v", doc.Cases[2])
	}
	// The egress by kind: an object of kinds, each bytes and packets;
	// absent where it was not measured.
	kinds, _ := doc.Cases[2]["server_egress_kinds"].(map[string]any)
	data, _ := kinds["seeder_data"].(map[string]any)
	if len(kinds) != 4 || data["bytes"] != float64(36<<20) || data["packets"] != 25800.0 {
		t.Errorf("JSON case 10 server_egress_kinds: %v", doc.Cases[2]["server_egress_kinds"])
	}
	if http, _ := doc.Cases[2]["http_server_egress_kinds"].(map[string]any); len(http) != 4 {
		t.Errorf("JSON case 10 http_server_egress_kinds: %v", doc.Cases[2]["http_server_egress_kinds"])
	}
	if _, ok := doc.Cases[0]["server_egress_kinds"]; ok {
		t.Errorf("JSON case 1 has server_egress_kinds without a measurement: %v", doc.Cases[0])
	}
}

func TestReportTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| 10 ", "| 18.0", "15.0/16.0/18.0", "1.34×", // 18/13.42
		"7.83×", // 141/18
		"84 %",  // peers share
		"2/3 completed", "invalid: machine saturated",
		"flatness T(N=10)/T(N=1): 1.29",
		"piece data received twice (thrown away): N=10 2.4 %", // 8 of 328 MiB
		"N=10 12.5 % withdrawn, 5.0 % rejected (thrown away from the seeder: 3.0 MiB)",
		"N=10 server egress by kind (IPv4 bytes; link egress 40.0 MiB with Ethernet headers): " +
			"seeder data 36.0 MiB (90 %, 25800 pkts), seeder small 2.0 MiB (5 %, 40000 pkts), http 2.0 MiB (5 %, 1500 pkts), other 0 B (0 %, 0 pkts)",
		"N=10 HTTP baseline's server egress by kind (IPv4 bytes; link egress 330.0 MiB with Ethernet headers): seeder data 0 B (0 %, 0 pkts), seeder small 0 B (0 %, 0 pkts), http 320.0 MiB (100 %, 230000 pkts), other 3.9 KiB (0 %, 12 pkts)",
		"test cpu, 2 cores",
		"N=3: boottorrent client 2: did not complete in time",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReportSVG(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML with one polyline per series that has points.
	dec := xml.NewDecoder(&b)
	lines := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 4 {
		t.Errorf("%d polylines, want 4 (boottorrent, HTTP, T*, HTTP bound)", lines)
	}
}

func TestProcParsers(t *testing.T) {
	stat := "cpu  100 5 50 800 40 0 5 0 7 0\ncpu0 50 2 25 400 20 0 3 0 0 0\nintr 1\n"
	ct, err := parseProcStat([]byte(stat))
	if err != nil || ct.total != 1000 || ct.busy != 160 {
		t.Errorf("parseProcStat = %+v, %v; want busy 160 of 1000", ct, err)
	}
	if ct.steal != 0 {
		t.Errorf("parseProcStat steal = %d, want 0", ct.steal)
	}
	// user nice system idle iowait irq softirq steal guest guest_nice
	if ct, err := parseProcStat([]byte("cpu  100 0 50 600 0 0 0 250 30 0\n")); err != nil || ct.steal != 250 || ct.busy != 400 || ct.total != 1000 {
		t.Errorf("parseProcStat with steal = %+v, %v; want steal 250, busy 400 of 1000", ct, err)
	}
	if _, err := parseProcStat([]byte("intr 1\n")); err == nil {
		t.Error("parseProcStat accepted no cpu line")
	}
	mem := "MemTotal:       24682220 kB\nMemFree:        21000000 kB\nMemAvailable:   20000000 kB\n"
	used, total, err := parseMemUsed([]byte(mem))
	if err != nil || total != 24682220*1024 || used != (24682220-20000000)*1024 {
		t.Errorf("parseMemUsed = %d, %d, %v", used, total, err)
	}
	ipj := `[{"ifindex":2,"ifname":"eth0","stats64":{"rx":{"bytes":1234,"packets":3},"tx":{"bytes":56789,"packets":40}}}]`
	lc, err := parseIPLinkStats([]byte(ipj))
	if err != nil || lc.TxBytes != 56789 || lc.RxBytes != 1234 {
		t.Errorf("parseIPLinkStats = %+v, %v", lc, err)
	}
	if _, err := parseIPLinkStats([]byte(`[]`)); err == nil {
		t.Error("parseIPLinkStats accepted no link")
	}
	bridge := `[{"ifname":"lo","stats64":{"rx":{"bytes":1},"tx":{"bytes":1}}},` +
		`{"ifname":"v1","stats64":{"rx":{"bytes":100},"tx":{"bytes":7}}},` +
		`{"ifname":"v2","stats64":{"rx":{"bytes":200},"tx":{"bytes":9}}}]`
	links, err := parseIPLinks([]byte(bridge))
	if err != nil || len(links) != 3 || links["v2"].RxBytes != 200 || links["v1"].TxBytes != 7 {
		t.Errorf("parseIPLinks = %+v, %v", links, err)
	}
	if _, err := parseIPLinks([]byte(`{`)); err == nil {
		t.Error("parseIPLinks accepted broken JSON")
	}
}

func TestShapeCmds(t *testing.T) {
	cmds := shapeCmds("v3", Shape{Rate: 20e6}, false)
	got := strings.Join(cmds[1], " ") + " | " + strings.Join(cmds[2], " ")
	// 100 ms at 20 Mbit/s is 250000 bytes of queue.
	want := "class add dev v3 parent 1: classid 1:1 htb rate 20000000bit ceil 20000000bit quantum 1514 | qdisc add dev v3 parent 1:1 handle 10: bfifo limit 250000"
	if got != want {
		t.Errorf("shapeCmds:\n got %s\nwant %s", got, want)
	}
	cmds = shapeCmds("eth0", Shape{Rate: 20e6, Delay: 500 * time.Microsecond}, false)
	if leaf := strings.Join(cmds[2], " "); !strings.Contains(leaf, "netem limit 166 delay 500us") {
		t.Errorf("netem leaf: %s", leaf)
	}
	// The server's upload: control first, nearly all of the rate guaranteed.
	cmds = shapeCmds("eth0", Shape{Rate: 20e6}, true)
	if got := strings.Join(cmds[2], " "); got != "class add dev eth0 parent 1:1 classid 1:10 htb rate 19000000bit ceil 20000000bit prio 0 quantum 1514" {
		t.Errorf("control class: %s", got)
	}
	if got := strings.Join(cmds[0], " "); !strings.HasSuffix(got, "default 20") {
		t.Errorf("unmarked traffic must default to the bulk class: %s", got)
	}
	if r := controlRules("eth0"); !strings.Contains(r, `oifname "eth0" ip dscp cs6 meta priority set 1:10`) ||
		!strings.Contains(r, `oifname "eth0" ip length <= 256 meta priority set 1:10`) || !strings.Contains(r, "table arp") {
		t.Errorf("controlRules:\n%s", r)
	}
	rules := lossRules("v7", 0.01)
	if !strings.Contains(rules, `device "v7"`) || !strings.Contains(rules, "numgen random mod 1000000 < 10000 drop") {
		t.Errorf("lossRules:\n%s", rules)
	}
}

func TestFetchLine(t *testing.T) {
	r, ok := parseFetchLine(fetchMarker + `{"bytes":42,"seconds":1.5}`)
	if !ok || r.Bytes != 42 || r.Seconds != 1.5 {
		t.Errorf("parseFetchLine = %+v, %v", r, ok)
	}
	for _, l := range []string{"", "hello", fetchMarker + "{", fetchMarker} {
		if _, ok := parseFetchLine(l); ok {
			t.Errorf("parseFetchLine(%q) accepted", l)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"32MiB", "1.5GiB", "", "9999999999999999999GiB", "NaN", ".", "1e400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && (n < 1 || n > 1<<40) {
			t.Errorf("ParseSize(%q) = %d out of range", s, n)
		}
		r, err := ParseRate(s)
		if err == nil && (r < 8e3 || r > 100e9 || math.IsNaN(r)) {
			t.Errorf("ParseRate(%q) = %g out of range", s, r)
		}
	})
}

func FuzzClientLines(f *testing.F) {
	f.Add(fetchMarker + `{"bytes":42,"seconds":1.5}`)
	f.Add(`{"stage":"done"}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, line string) {
		parseFetchLine(line)
		parseClientLine(line, 1<<20)
		parseLabLine(line, 1<<20)
	})
}

func TestClientLine(t *testing.T) {
	// A final line as the boot client printed it in a run of the benchmark.
	line := `BOOTTORRENT-RESULT {"os":"bench","mode":"torrent","seconds":6.022070107,"download_seconds":2.985193468,"seed_seconds":3.02191275,"bytes":4194450,"from_peers":1196178,"from_seeder":2998272,"from_webseed":0,"uploaded":1081344,"pieces_failed":0,"wasted":32768,"wasted_seeder":0,"requests":172,"requests_withdrawn":12,"requests_rejected":3,"attempts":1}`
	o, ok := parseClientLine(line, 4194450)
	if !ok || !o.Done || o.Err != "" || o.FromPeers != 1196178 || o.FromSeeder != 2998272 || o.SeedSeconds != 3.02191275 || o.Uploaded != 1081344 || o.Wasted != 32768 {
		t.Errorf("parseClientLine = %+v, %v", o, ok)
	}
	if o.Requests != 172 || o.Withdrawn != 12 || o.Rejected != 3 || o.WastedSeeder != 0 {
		t.Errorf("parseClientLine requests = %d sent, %d withdrawn, %d rejected, %d wasted from the seeder", o.Requests, o.Withdrawn, o.Rejected, o.WastedSeeder)
	}
	o, ok = parseClientLine(line, 5<<20)
	if !ok || o.Done || !strings.Contains(o.Err, "4194450 bytes") {
		t.Errorf("short download: %+v, %v", o, ok)
	}
	for _, l := range []string{"", "BOOTTORRENT-RESULT", "BOOTTORRENT-RESULT {", `time=x msg="download complete"`} {
		if _, ok := parseClientLine(l, 1); ok {
			t.Errorf("parseClientLine(%q) accepted", l)
		}
	}
	r, ok := parseLabLine(labMarker+`{"bytes":10,"seconds":1,"seed_seconds":0.5,"from_peers":7,"from_seeder":3,"wasted":16384}`, 10)
	if !ok || !r.Done || r.SeedSeconds != 0.5 || r.Wasted != 16384 || r.FromPeers != 7 {
		t.Errorf("parseLabLine = %+v, %v", r, ok)
	}
}

func TestOSReady(t *testing.T) {
	if ok, err := osReady([]byte(`[{"name":"bench","info_hash":"ab12","files":[]}]`), "bench"); !ok || err != nil {
		t.Errorf("hashed OS: %v, %v", ok, err)
	}
	if ok, err := osReady([]byte(`[{"name":"bench","info_hash":"","files":[]}]`), "bench"); ok || err == nil {
		t.Errorf("unhashed OS: %v, %v", ok, err)
	}
	if ok, _ := osReady([]byte(`[{"name":"other","info_hash":"ab"}]`), "bench"); ok {
		t.Error("missing OS reported ready")
	}
	if _, err := osReady([]byte(`{`), "bench"); err == nil {
		t.Error("bad JSON accepted")
	}
}

// TestMergeRuns: repeated runs make one row, the run with the median
// all-done time, with the first run's HTTP baseline; a run where a client
// did not complete counts as the slowest, and no error is lost.
func TestMergeRuns(t *testing.T) {
	run := func(all, med float64, peak float64, errs ...string) Case {
		c := Case{Clients: 20, SizeBytes: 32 << 20, BoundS: 13.42, AllCompleteS: all, ClientMaxS: all, ClientMedianS: med,
			ServerEgressBytes: int64(med * 1e6), CPUPeakBusy: peak, Errors: errs}
		c.RatioToBound = ratio(c.AllCompleteS, c.BoundS)
		return c
	}
	first := run(26, 21, 0.9)
	first.HTTPAllCompleteS, first.HTTPCompleted, first.HTTPServerEgressBytes = 288, 20, 700<<20
	first.HTTPServerEgressKinds = EgressKinds{KindHTTP: {Bytes: 690 << 20, Packets: 500000}}
	runs := []Case{first, run(19, 18, 1.0), run(0, 19.5, 0.8, "boottorrent client 3: did not complete in time")}
	runs[1].Invalid = "invalid: host busy (it took 23 % of the CPU during the downloads: steal time)"
	got := MergeRuns(runs)
	if got.Invalid != "invalid: run 2: host busy (it took 23 % of the CPU during the downloads: steal time)" {
		t.Errorf("invalid = %q, want run 2's reason, numbered", got.Invalid)
	}
	if got.AllCompleteS != 26 || got.ClientMedianS != 21 || got.ServerEgressBytes != int64(21*1e6) {
		t.Errorf("row = all %g median %g egress %d, want the median run (26 s, 21 s, its own egress)", got.AllCompleteS, got.ClientMedianS, got.ServerEgressBytes)
	}
	if got.HTTPAllCompleteS != 288 || got.HTTPCompleted != 20 || math.Abs(got.HTTPOverBoottorrent-288.0/26) > 1e-9 {
		t.Errorf("HTTP baseline = %g s, %d done, ratio %g; want the first run's against the median run", got.HTTPAllCompleteS, got.HTTPCompleted, got.HTTPOverBoottorrent)
	}
	if got.HTTPServerEgressKinds[KindHTTP].Bytes != 690<<20 {
		t.Errorf("HTTP baseline's egress by kind = %v, want the first run's", got.HTTPServerEgressKinds)
	}
	if !slices.Equal(got.RunsAllCompleteS, []float64{26, 19, 0}) || !slices.Equal(got.RunsMedianS, []float64{21, 18, 19.5}) {
		t.Errorf("runs = %v / %v", got.RunsAllCompleteS, got.RunsMedianS)
	}
	if got.CPUPeakBusy != 1.0 {
		t.Errorf("CPU peak %g, want the highest of the runs", got.CPUPeakBusy)
	}
	if len(got.Errors) != 1 || !strings.HasPrefix(got.Errors[0], "run 3: ") {
		t.Errorf("errors = %q, want run 3's, numbered", got.Errors)
	}
	if one := MergeRuns(runs[:1]); one.RunsAllCompleteS != nil || one.AllCompleteS != 26 {
		t.Errorf("a single run must stay as it is: %+v", one)
	}
	var b bytes.Buffer
	r := &Report{Cases: []Case{got}}
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "median of 3 runs, all done 26.0/19.0/— s") {
		t.Errorf("table does not show the runs:\n%s", b.String())
	}
}

// After a timed-out phase several clients are still running: the grace
// must bound the whole wait, not only the wait for the first of them.
func TestWaitExitsGraceBoundsTheWhole(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	never1, never2 := make(chan struct{}), make(chan struct{})
	start := time.Now()
	waitExits(context.Background(), []<-chan struct{}{closed, never1, never2, closed}, 50*time.Millisecond)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("waitExits with two clients that never exit took %v, want about the 50 ms grace", d)
	}
	start = time.Now()
	waitExits(context.Background(), []<-chan struct{}{closed, closed}, time.Hour)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("waitExits with every client gone took %v, want at once", d)
	}
}

// TestOffloadWithLossRefused: loss must hit Ethernet-sized packets, so an
// explicit --offload with --loss is a usage error (and without an
// explicit --offload, loss turns the default off instead).
func TestOffloadWithLossRefused(t *testing.T) {
	var out, errOut strings.Builder
	if code := Main([]string{"--offload", "--loss", "1%", "--clients", "1"}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2; stderr: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "--offload with --loss") {
		t.Fatalf("stderr does not name the conflict: %s", errOut.String())
	}
	errOut.Reset()
	// The same without --offload gets past this check; a bad --size
	// keeps the run from starting.
	if code := Main([]string{"--loss", "1%", "--clients", "1", "--size", "lots"}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2; stderr: %s", code, errOut.String())
	}
	if strings.Contains(errOut.String(), "--offload") {
		t.Fatalf("default offload refused with --loss: %s", errOut.String())
	}
}

// TestClientNice: --client-nice runs each client under nice(1) with the
// program and its arguments unchanged; 0 leaves the command alone, and a
// value outside 0–19 is a usage error.
func TestClientNice(t *testing.T) {
	cmd := exec.Command("ip", "netns", "exec", "bt-c1", "/tmp/boottorrent", "client")
	path, args := cmd.Path, slices.Clone(cmd.Args)
	nice(cmd, 0)
	if cmd.Path != path || !slices.Equal(cmd.Args, args) {
		t.Fatalf("niceness 0 changed the command: %s %q", cmd.Path, cmd.Args)
	}
	nice(cmd, 19)
	want := append([]string{"nice", "-n", "19", path}, args[1:]...)
	if filepath.Base(cmd.Path) != "nice" || !slices.Equal(cmd.Args, want) {
		t.Fatalf("got %s %q, want nice's path and %q", cmd.Path, cmd.Args, want)
	}
	out, err := exec.Command(cmd.Path, "-n", "19", "sh", "-c", "nice").Output()
	if err != nil || strings.TrimSpace(string(out)) != "19" {
		t.Fatalf("a process started under %s reports niceness %q (%v), want 19", cmd.Path, out, err)
	}
	var stdout, stderr strings.Builder
	if code := Main([]string{"--client-nice", "20", "--clients", "1"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--client-nice 20") {
		t.Fatalf("--client-nice 20: exit %d, stderr %q; want 2 and the flag named", code, stderr.String())
	}
}

func TestInvalidNote(t *testing.T) {
	for _, c := range []struct {
		c    Case
		want []string // substrings; none means a valid case
	}{
		{Case{CPUPeakBusy: 0.5, CPUStealMean: 0.02, HTTPCPUStealMean: 0.05}, nil},
		{Case{CPUPeakBusy: 0.9, CPUMeanBusy: 0.7}, []string{"machine saturated (CPU 90 % busy at peak, 70 % on average"}},
		{Case{CPUPeakBusy: 0.5, CPUStealMean: 0.25}, []string{"host busy (it took 25 %"}},
		{Case{CPUPeakBusy: 0.5, HTTPCPUStealMean: 0.4}, []string{"host busy during the HTTP baseline (steal 40 %)"}},
		{Case{CPUPeakBusy: 0.99, CPUStealMean: 0.3}, []string{"machine saturated", "; host busy (it took 30 %"}},
	} {
		got := invalidNote(c.c)
		if len(c.want) == 0 {
			if got != "" {
				t.Errorf("%+v: %q, want valid", c.c, got)
			}
			continue
		}
		if !strings.HasPrefix(got, "invalid: ") {
			t.Errorf("%+v: %q does not start with \"invalid: \"", c.c, got)
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v: %q lacks %q", c.c, got, w)
			}
		}
	}
}
