package bench

import (
	"encoding/json"
	"fmt"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
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

// parseClientLine reads the boot client's machine-readable final line.
// TODO(swarmbench): match the client's format once it lands.
func parseClientLine(line string, size int64) (outcome, bool) {
	return outcome{}, false
}
