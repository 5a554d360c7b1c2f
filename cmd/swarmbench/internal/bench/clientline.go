package bench

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// osReady reports whether the server's OS list (bootapi.PathOSList) names
// the OS with an info hash, i.e. the seeder is ready to serve it.
func osReady(body []byte, name string) (bool, error) {
	var list []bootapi.OS
	if err := json.Unmarshal(body, &list); err != nil {
		return false, fmt.Errorf("OS list: %w", err)
	}
	for _, o := range list {
		if o.Name == name {
			if o.InfoHash == "" {
				return false, errNotReady
			}
			return true, nil
		}
	}
	return false, fmt.Errorf("OS %q is not in the server's list", name)
}

// parseClientLine reads the boot client's final line. The client prints
// it after seeding, so the outcome carries the seeding time for the runner
// to take off the moment it saw the line.
func parseClientLine(line string, size int64) (outcome, bool) {
	r, ok := markedLine[bootapi.Result](strings.TrimSpace(line), bootapi.ResultPrefix)
	if !ok {
		return outcome{}, false
	}
	o := outcome{Done: r.Bytes == size, FromPeers: r.FromPeers, FromSeeder: r.FromSeeder, FromWeb: r.FromWeb,
		SeedSeconds: max(0, r.SeedSeconds), DownloadSeconds: r.DownloadSeconds, Uploaded: r.Uploaded, PiecesFailed: r.PiecesFailed, Wasted: r.Wasted,
		WastedSeeder: r.WastedSeeder, Requests: r.Requests, Withdrawn: r.Withdrawn, Rejected: r.Rejected}
	if !o.Done {
		o.Err = fmt.Sprintf("client reported %d bytes, want %d", r.Bytes, size)
	}
	return o, true
}
