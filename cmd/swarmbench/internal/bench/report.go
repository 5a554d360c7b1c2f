package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Case is the result of one client count: the boottorrent run and the
// plain-HTTP baseline on the same links. Times are seconds from the moment
// all clients were started; a zero time means "did not finish".
type Case struct {
	Clients   int     `json:"clients"`
	SizeBytes int64   `json:"size_bytes"`
	RateBps   float64 `json:"rate_bps"`   // every client link, bits/s
	ServerBps float64 `json:"server_bps"` // server link, bits/s
	LatencyMS float64 `json:"latency_ms"` // round trip between two hosts
	Loss      float64 `json:"loss"`       // per client link direction, fraction
	// Congestion is every host's TCP congestion control ("": the
	// machine's default, not recorded).
	Congestion string `json:"tcp_congestion,omitempty"`
	// Offload: the veths kept their segmentation offloads (--offload).
	Offload bool `json:"offload,omitempty"`
	// ClientNice is the client processes' niceness (--client-nice).
	ClientNice int `json:"client_nice"`

	// boottorrent
	AllCompleteS      float64 `json:"all_complete_s"`
	ClientMinS        float64 `json:"client_min_s"`
	ClientMedianS     float64 `json:"client_median_s"`
	ClientMaxS        float64 `json:"client_max_s"`
	Completed         int     `json:"completed"`
	BoundS            float64 `json:"bound_s"`
	RatioToBound      float64 `json:"ratio_to_bound"`
	ServerEgressBytes int64   `json:"server_egress_bytes"`
	EgressPerImage    float64 `json:"server_egress_per_image"`
	ServerBusyS       float64 `json:"server_busy_s"`                 // when the server had sent 95 % of its egress
	PeerBytes         int64   `json:"peer_bytes"`                    // payload clients got from other clients
	SeederBytes       int64   `json:"seeder_bytes"`                  // payload from the server's seeder
	WebSeedBytes      int64   `json:"webseed_bytes"`                 // payload from the server's web seed
	PeerShare         float64 `json:"peer_share"`                    // PeerBytes / all payload received
	WastedBytes       int64   `json:"wasted_bytes,omitempty"`        // received but not needed (duplicates), where the engine reports it
	WastedSeederBytes int64   `json:"wasted_seeder_bytes,omitempty"` // the part of WastedBytes that came from the seeder
	PiecesFailed      int64   `json:"pieces_failed,omitempty"`
	// chunk requests the clients sent, those the library withdrew
	// without a reject (cancelled, mostly to ask another peer, when the
	// chunk was already on its way) and the rejects (mostly cancels in
	// time), where the engine reports them (initramfs/client.Progress)
	Requests          int64 `json:"requests,omitempty"`
	RequestsWithdrawn int64 `json:"requests_withdrawn,omitempty"`
	RequestsRejected  int64 `json:"requests_rejected,omitempty"`

	// ServerEgressKinds splits the server's egress by kind (seeder_data,
	// seeder_small, http, other), each {"bytes", "packets"}: IPv4 bytes
	// on the server's link, without the Ethernet headers in
	// ServerEgressBytes (see EgressKinds).
	ServerEgressKinds EgressKinds `json:"server_egress_kinds,omitempty"`

	// plain HTTP baseline
	HTTPAllCompleteS      float64 `json:"http_all_complete_s"`
	HTTPClientMinS        float64 `json:"http_client_min_s"`
	HTTPClientMedianS     float64 `json:"http_client_median_s"`
	HTTPClientMaxS        float64 `json:"http_client_max_s"`
	HTTPCompleted         int     `json:"http_completed"`
	HTTPBoundS            float64 `json:"http_bound_s"`
	HTTPServerEgressBytes int64   `json:"http_server_egress_bytes"`
	HTTPOverBoottorrent   float64 `json:"http_over_boottorrent"`

	// HTTPServerEgressKinds is ServerEgressKinds for the HTTP phase.
	HTTPServerEgressKinds EgressKinds `json:"http_server_egress_kinds,omitempty"`

	// the machine while the case ran: the peaks over both phases, the
	// means over the BitTorrent phase (the HTTP phase of N clients runs N
	// times longer at a few per cent and would dilute them)
	CPUPeakBusy float64 `json:"cpu_peak_busy"` // fraction of all cores, 1 s windows
	CPUMeanBusy float64 `json:"cpu_mean_busy"`
	// CPUStealMean and HTTPCPUStealMean are the mean share of all cores
	// the host took from this machine (steal time) during the
	// BitTorrent and the HTTP phase: other guests' load, which slows
	// both the clients and the emulated network.
	CPUStealMean     float64  `json:"cpu_steal_mean"`
	HTTPCPUStealMean float64  `json:"http_cpu_steal_mean"`
	BenchCPUS        float64  `json:"bench_cpu_s"`    // CPU seconds used by the processes the benchmark ran
	BenchCPUBusy     float64  `json:"bench_cpu_busy"` // BenchCPUS over the measured window and all cores
	MeasuredS        float64  `json:"measured_s"`     // length of the measured window
	MemPeakBytes     int64    `json:"mem_peak_bytes"`
	Invalid          string   `json:"invalid,omitempty"`
	Errors           []string `json:"errors,omitempty"`

	// With --repeat, the BitTorrent phase ran once per entry (the HTTP
	// baseline only in the first); the row is the run with the median
	// all-done time (see MergeRuns). Empty for a single run.
	RunsAllCompleteS []float64 `json:"runs_all_complete_s,omitempty"` // 0: not every client completed
	RunsMedianS      []float64 `json:"runs_client_median_s,omitempty"`
}

// MergeRuns makes one row of repeated runs of a case: the run whose
// all-done time is the median (a run where a client did not complete
// counts as the slowest), with the HTTP baseline of the first run, every
// run's all-done and median-client time, the highest CPU and memory
// peaks, and every run's errors. Quoting the median run keeps the row's
// figures from one run, consistent with each other.
func MergeRuns(runs []Case) Case {
	if len(runs) == 1 {
		return runs[0]
	}
	key := func(c Case) float64 {
		if c.AllCompleteS <= 0 {
			return math.Inf(1)
		}
		return c.AllCompleteS
	}
	order := make([]int, len(runs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return key(runs[order[a]]) < key(runs[order[b]]) })
	out := runs[order[(len(runs)-1)/2]]
	first := runs[0]
	out.HTTPAllCompleteS, out.HTTPClientMinS, out.HTTPClientMedianS, out.HTTPClientMaxS = first.HTTPAllCompleteS, first.HTTPClientMinS, first.HTTPClientMedianS, first.HTTPClientMaxS
	out.HTTPCompleted, out.HTTPServerEgressBytes, out.HTTPServerEgressKinds = first.HTTPCompleted, first.HTTPServerEgressBytes, first.HTTPServerEgressKinds
	out.HTTPCPUStealMean = first.HTTPCPUStealMean
	out.HTTPOverBoottorrent = ratio(out.HTTPAllCompleteS, out.AllCompleteS)
	out.Errors = nil
	out.RunsAllCompleteS, out.RunsMedianS = nil, nil
	// Each run's own reason, numbered: the reported run's steal or CPU
	// is not the others'.
	var invalid []string
	for i, c := range runs {
		out.RunsAllCompleteS = append(out.RunsAllCompleteS, c.AllCompleteS)
		out.RunsMedianS = append(out.RunsMedianS, c.ClientMedianS)
		out.CPUPeakBusy = max(out.CPUPeakBusy, c.CPUPeakBusy)
		out.MemPeakBytes = max(out.MemPeakBytes, c.MemPeakBytes)
		if c.Invalid != "" {
			invalid = append(invalid, fmt.Sprintf("run %d: %s", i+1, strings.TrimPrefix(c.Invalid, "invalid: ")))
		}
		for _, e := range c.Errors {
			out.Errors = append(out.Errors, fmt.Sprintf("run %d: %s", i+1, e))
		}
	}
	out.Invalid = ""
	if len(invalid) > 0 {
		out.Invalid = "invalid: " + strings.Join(invalid, "; ")
	}
	return out
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemBytes int64  `json:"mem_bytes"`
	Kernel   string `json:"kernel"`
}

// Report is the whole run.
type Report struct {
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Cases    []Case    `json:"cases"`
	Flatness float64   `json:"flatness,omitempty"` // T(N max)/T(N=1), when both ran
	// Engine is what ran on the LAN (boottorrent, lab or harness).
	Engine string `json:"engine"`
	// HarnessOnly is set when no BitTorrent phase ran (--engine harness).
	HarnessOnly bool `json:"harness_only,omitempty"`
	// HTTPSkipped is set when the HTTP baseline did not run (--no-http).
	HTTPSkipped bool `json:"http_skipped,omitempty"`
}

// Finish fills the derived fields of a case from its measured ones.
func (c *Case) Finish(bt, http []float64) {
	if s := SpreadOf(bt); len(bt) > 0 {
		c.ClientMinS, c.ClientMedianS, c.ClientMaxS = s.Min, s.Median, s.Max
	}
	if s := SpreadOf(http); len(http) > 0 {
		c.HTTPClientMinS, c.HTTPClientMedianS, c.HTTPClientMaxS = s.Min, s.Median, s.Max
	}
	c.Completed, c.HTTPCompleted = len(bt), len(http)
	if c.Completed == c.Clients && c.Clients > 0 {
		c.AllCompleteS = c.ClientMaxS
	}
	if c.HTTPCompleted == c.Clients && c.Clients > 0 {
		c.HTTPAllCompleteS = c.HTTPClientMaxS
	}
	c.RatioToBound = ratio(c.AllCompleteS, c.BoundS)
	c.HTTPOverBoottorrent = ratio(c.HTTPAllCompleteS, c.AllCompleteS)
	c.EgressPerImage = ratio(float64(c.ServerEgressBytes), float64(c.SizeBytes))
	c.PeerShare = ratio(float64(c.PeerBytes), float64(c.PeerBytes+c.SeederBytes+c.WebSeedBytes))
}

func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return 0
	}
	return a / b
}

// SetFlatness computes T(N max)/T(N=1) when both cases completed.
func (r *Report) SetFlatness() {
	var one, most *Case
	for i := range r.Cases {
		c := &r.Cases[i]
		if c.Clients == 1 {
			one = c
		}
		if most == nil || c.Clients > most.Clients {
			most = c
		}
	}
	r.Flatness = 0
	if one != nil && most != nil && most != one {
		r.Flatness = ratio(most.AllCompleteS, one.AllCompleteS)
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func secs(v float64) string {
	if v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f", v)
}

func times(v float64) string {
	if v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v)
}

// WriteTable writes the human-readable table (Markdown, so it can go into
// the README as it is) and the notes under it.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| N\t| all done s\t| min/med/max s\t| T* s\t| /T*\t| HTTP s\t| HTTP/bt\t| egress/S\t| server busy s\t| from peers\t| CPU peak\t| mem peak\t| note\t|")
	fmt.Fprintln(tw, "|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|---\t|")
	for _, c := range r.Cases {
		note := c.Invalid
		if c.Completed < c.Clients && !r.HarnessOnly {
			note = strings.TrimPrefix(note+fmt.Sprintf("; %d/%d completed", c.Completed, c.Clients), "; ")
		}
		if c.HTTPCompleted < c.Clients && !r.HTTPSkipped {
			note = strings.TrimPrefix(note+fmt.Sprintf("; HTTP %d/%d completed", c.HTTPCompleted, c.Clients), "; ")
		}
		if len(c.RunsAllCompleteS) > 1 {
			all := make([]string, len(c.RunsAllCompleteS))
			for i, v := range c.RunsAllCompleteS {
				all[i] = secs(v)
			}
			note = strings.TrimPrefix(note+fmt.Sprintf("; median of %d runs, all done %s s", len(all), strings.Join(all, "/")), "; ")
		}
		fmt.Fprintf(tw, "| %d\t| %s\t| %s/%s/%s\t| %s\t| %s\t| %s\t| %s\t| %.2f\t| %s\t| %.0f %%\t| %.0f %%\t| %s\t| %s\t|\n",
			c.Clients, secs(c.AllCompleteS), secs(c.ClientMinS), secs(c.ClientMedianS), secs(c.ClientMaxS),
			secs(c.BoundS), times(c.RatioToBound), secs(c.HTTPAllCompleteS), times(c.HTTPOverBoottorrent),
			c.EgressPerImage, secs(c.ServerBusyS), 100*c.PeerShare, 100*c.CPUPeakBusy, FormatBytes(float64(c.MemPeakBytes)), note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Cases) > 0 {
		c := r.Cases[0]
		cc := c.Congestion
		if cc == "" {
			cc = "the machine's default"
		}
		off := "off"
		if c.Offload {
			off = "on"
		}
		fmt.Fprintf(w, "\nengine %s; image %s; client links %s, server link %s, RTT %gms, loss %g %% per client link direction; TCP congestion control %s; segmentation offloads %s; clients at niceness %d\n",
			r.Engine, FormatBytes(float64(c.SizeBytes)), FormatRate(c.RateBps), FormatRate(c.ServerBps), c.LatencyMS, 100*c.Loss, cc, off, c.ClientNice)
	}
	var waste []string
	for _, c := range r.Cases {
		if recv := c.PeerBytes + c.SeederBytes + c.WebSeedBytes + c.WastedBytes; c.WastedBytes > 0 && recv > 0 {
			waste = append(waste, fmt.Sprintf("N=%d %.1f %%", c.Clients, 100*float64(c.WastedBytes)/float64(recv)))
		}
	}
	if len(waste) > 0 {
		fmt.Fprintf(w, "piece data received twice (thrown away): %s\n", strings.Join(waste, ", "))
	}
	var reqs []string
	for _, c := range r.Cases {
		if c.Requests > 0 {
			reqs = append(reqs, fmt.Sprintf("N=%d %.1f %% withdrawn, %.1f %% rejected (thrown away from the seeder: %s)", c.Clients,
				100*float64(c.RequestsWithdrawn)/float64(c.Requests), 100*float64(c.RequestsRejected)/float64(c.Requests), FormatBytes(float64(c.WastedSeederBytes))))
		}
	}
	if len(reqs) > 0 {
		fmt.Fprintf(w, "chunk requests cancelled too late to stop the chunk (or dropped with their connection) / rejected (mostly cancels in time): %s\n", strings.Join(reqs, "; "))
	}
	// Where the server's uplink went, next to the link's own count; the
	// kinds are IPv4 bytes, without Ethernet headers (see EgressKinds).
	for _, c := range r.Cases {
		if c.ServerEgressKinds != nil {
			fmt.Fprintf(w, "N=%d server egress by kind (IPv4 bytes; link egress %s with Ethernet headers): %s\n",
				c.Clients, FormatBytes(float64(c.ServerEgressBytes)), formatKinds(c.ServerEgressKinds))
		}
		if c.HTTPServerEgressKinds != nil {
			fmt.Fprintf(w, "N=%d HTTP baseline's server egress by kind (IPv4 bytes; link egress %s with Ethernet headers): %s\n",
				c.Clients, FormatBytes(float64(c.HTTPServerEgressBytes)), formatKinds(c.HTTPServerEgressKinds))
		}
	}
	if r.Flatness > 0 {
		fmt.Fprintf(w, "flatness T(N=%d)/T(N=1): %.2f\n", r.Cases[len(r.Cases)-1].Clients, r.Flatness)
	}
	fmt.Fprintf(w, "machine: %s, %d cores, %s RAM, Linux %s\n", r.Machine.CPU, r.Machine.Cores, FormatBytes(float64(r.Machine.MemBytes)), r.Machine.Kernel)
	for _, c := range r.Cases {
		for _, e := range c.Errors {
			fmt.Fprintf(w, "N=%d: %s\n", c.Clients, e)
		}
	}
	return nil
}
