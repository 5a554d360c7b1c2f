package cli

import (
	"fmt"
	"io"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot"
	"github.com/boottorrent/boottorrent/netboot/dashboard"
)

// textIndex is "/" for a client that does not ask for HTML (curl).
func textIndex(w io.Writer) {
	fmt.Fprintf(w, "boottorrent %s\n\n%s  machines booting (JSON)\n%s  machines as Server-Sent Events\n%s  operating systems (JSON)\n%s  boot script for iPXE\n",
		versionString(), bootapi.PathMachines, bootapi.PathEvents, bootapi.PathOSList, bootapi.PathBootScript)
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
