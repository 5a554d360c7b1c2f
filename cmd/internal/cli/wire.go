package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs"
	"github.com/boottorrent/boottorrent/seeder"
)

// infoHashes is Env.InfoHashes, or the seeder's hash cache.
func (env *Env) infoHashes() func(*config.Project) map[string]string {
	if env.InfoHashes != nil {
		return env.InfoHashes
	}
	return seeder.CachedInfo
}

// clientSummary is Env.ClientSummary, or inspectClient.
func (env *Env) clientSummary() func(*config.Project) string {
	if env.ClientSummary != nil {
		return env.ClientSummary
	}
	return inspectClient
}

// inspectClient tells check how big the boot client is, without building
// it: every machine loads the client kernel + initramfs over the network.
func inspectClient(p *config.Project) string {
	c := p.Config.Client
	self, _ := os.Executable()
	r, err := initramfs.Inspect(initramfs.Options{Kernel: c.Kernel, Modules: c.Modules,
		ExtraModules: c.ExtraModules, Self: self, OutDir: p.OutDir()})
	switch {
	case errors.Is(err, initramfs.ErrNotBuilt):
		return "client initramfs: not built yet (start builds it and caches it in out/client/)"
	case err != nil:
		return fmt.Sprintf("client initramfs: %v", err)
	}
	return fmt.Sprintf("client: %s to load per machine (kernel + initramfs %s)", humanBytes(r.Size), r.Initramfs)
}
