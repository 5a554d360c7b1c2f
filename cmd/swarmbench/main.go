// Command swarmbench measures how long N machines booting at once take to
// download an OS with boottorrent, against the fluid lower bound and plain
// HTTP, on an emulated LAN of network namespaces with tc-shaped links.
// It needs root. See the README's "Performance" section.
package main

import (
	"os"

	"github.com/boottorrent/boottorrent/cmd/swarmbench/internal/bench"
)

func main() {
	if h := os.Getenv(bench.HelperEnv); h != "" {
		os.Exit(bench.Helper(h, os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr))
}
