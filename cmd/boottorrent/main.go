// Command boottorrent is the network-boot appliance. The same static binary
// is the boot client: packed as /init in the client's initramfs, it runs as
// PID 1 on every booting machine.
package main

import (
	"os"

	"github.com/boottorrent/boottorrent/cmd/internal/cli"
	"github.com/boottorrent/boottorrent/initramfs/client"
)

func main() {
	if os.Getpid() == 1 {
		os.Exit(client.Main(nil))
	}
	os.Exit(cli.Main(os.Args[1:], cli.DefaultEnv()))
}
