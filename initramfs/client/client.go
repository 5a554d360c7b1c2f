// Package client is the boot client: the program that runs as /init in the
// client initramfs (and, for tests and the swarm benchmark, as the hidden
// `boottorrent client` subcommand).
package client

import (
	"fmt"
	"os"
)

// Main runs the client and returns the process exit code. args are the
// flags after `boottorrent client`; when the binary runs as PID 1 the
// caller passes nil and Main switches to init mode.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "boottorrent client: not implemented yet")
	return 1
}
