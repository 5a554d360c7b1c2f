package cli

import (
	"fmt"

	"github.com/boottorrent/boottorrent/initramfs/client"
)

// runClient is the hidden "boottorrent client" command: the boot client
// outside of /init (tests, the swarm benchmark). Its flags are the
// client's own; --help lists them.
func runClient(env *Env, args []string) error {
	if code := client.Main(args); code != 0 {
		return fmt.Errorf("the boot client exited with status %d", code)
	}
	return nil
}
