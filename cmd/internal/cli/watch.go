package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot"
	"github.com/boottorrent/boottorrent/netboot/dashboard"
	"github.com/boottorrent/boottorrent/netboot/metrics"
	"github.com/boottorrent/boottorrent/seeder"
)

// textIndex is "/" for a client that does not ask for HTML (curl).
func textIndex(w io.Writer) {
	fmt.Fprintf(w, "boottorrent %s\n\n%s  machines booting (JSON)\n%s  machines as Server-Sent Events\n%s  Prometheus metrics\n%s  operating systems (JSON)\n%s  boot script for iPXE\n",
		versionString(), bootapi.PathMachines, bootapi.PathEvents, bootapi.PathMetrics, bootapi.PathOSList, bootapi.PathBootScript)
}

// newDashboard is the operator's page over nb's machine registry, not
// started.
func newDashboard(nb *netboot.Server) *dashboard.Dashboard {
	return dashboard.New(dashboard.Options{Source: nb.Registry(), Text: textIndex})
}

// startDashboard starts the page's comparisons, stopped with a.
func startDashboard(a *appliance, nb *netboot.Server) *dashboard.Dashboard {
	d := newDashboard(nb)
	d.Start()
	a.onClose("dashboard", d.Close)
	return d
}

// metricSources are what /metrics reads from the parts at scrape time.
func metricSources(nb *netboot.Server, sd *seeder.Seeder) metrics.Sources {
	return metrics.Sources{
		Machines: nb.Machines,
		SeederUploaded: func() map[string]int64 {
			out := map[string]int64{}
			for os, st := range sd.Stats() {
				out[os] = st.Uploaded
			}
			return out
		},
		Announces: sd.TrackerAnnounces,
	}
}

// httpKind labels a route's bytes in boottorrent_http_sent_bytes_total.
func httpKind(pattern string) string {
	_, path, _ := strings.Cut(pattern, " ")
	switch path {
	case bootapi.PathWebSeed:
		return "webseed"
	case bootapi.PathClientKernel, bootapi.PathClientInitramfs:
		return "client"
	case bootapi.PathTorrents:
		return "torrent"
	case bootapi.PathBootScript:
		return "boot_script"
	case bootapi.PathAnnounce, bootapi.PathScrape:
		return "tracker"
	case bootapi.PathEvents, bootapi.PathDashboardFiles, "/{$}":
		return "dashboard"
	case bootapi.PathMetrics:
		return "metrics"
	}
	return "api"
}
