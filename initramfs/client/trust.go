package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"aead.dev/minisign"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// clientTrust checks an OS against its signed manifest with the keys
// baked into this initramfs (manifest.TrustPath), never keys from the
// network. Before the download it verifies the manifest and that the boot
// API's entry (boot settings, info hash) is the signed one; after it, and
// before anything is booted, the SHA-256 of every downloaded file.
type clientTrust struct {
	policy string
	keys   []minisign.PublicKey
	fetch  func(ctx context.Context, path string, limit int64) ([]byte, error)
}

// loadTrust reads the trust file. A missing file means no checks: the
// server's start always bakes one in, so it is missing only from an
// initramfs built without one (tests, older servers) or a process-mode
// client without --trust. A file that is there but damaged is an error:
// booting unchecked is not the safe way to fail.
func loadTrust(path string, fetch func(ctx context.Context, path string, limit int64) ([]byte, error)) (*clientTrust, error) {
	if path == "" {
		return nil, nil
	}
	t, err := manifest.ReadTrust(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust settings: %w", err)
	}
	if t.Effective() == manifest.PolicyOff {
		return nil, nil
	}
	keys, err := t.PublicKeys()
	if err != nil {
		return nil, err
	}
	return &clientTrust{policy: t.Effective(), keys: keys, fetch: fetch}, nil
}

// errUnsigned refuses an OS without a manifest under require.
var errUnsigned = errors.New("the server offers no signed manifest for this OS, and this client boots only signed OSes (trust.policy require)")

// before fetches and verifies the OS's manifest; nil (no error) for an
// unsigned OS the policy lets through.
func (c *clientTrust) before(ctx context.Context, o *bootapi.OS) (*manifest.Verified, error) {
	if o.Manifest == "" {
		if c.policy == manifest.PolicyRequire {
			return nil, errUnsigned
		}
		return nil, nil
	}
	p := o.Manifest
	if !strings.HasPrefix(p, bootapi.PathManifests) || strings.Contains(p, "..") {
		p = bootapi.PathManifests + o.Name + ".json"
	}
	body, err := c.fetch(ctx, p, manifest.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest: %w", err)
	}
	sig, err := c.fetch(ctx, p+".minisig", manifest.MaxSigBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest signature: %w", err)
	}
	v, err := manifest.Verify(body, sig, c.keys)
	if err != nil {
		return nil, err
	}
	got := manifest.Boot{Method: o.Method, Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline, Bin: o.Bin, BinArgs: o.BinArgs, Args: o.Args}
	switch {
	case v.Name != o.Name:
		return nil, fmt.Errorf("key id %s signed OS %q, the server offers it as %q", v.KeyID, v.Name, o.Name)
	case !v.Boot.Equal(got):
		return nil, fmt.Errorf("key id %s: the server's boot settings for %s differ from the signed ones (method, kernel, initrd, cmdline, bin, args)", v.KeyID, o.Name)
	case o.InfoHash != "" && !strings.EqualFold(o.InfoHash, v.InfoHash) && !strings.EqualFold(o.InfoHash, v.PublicInfoHash):
		// The download refuses a torrent whose info hash is not the boot
		// API's, so this binds the pieces to the signature too.
		return nil, fmt.Errorf("key id %s: torrent info hash %s, the manifest signed %s", v.KeyID, o.InfoHash, v.InfoHash)
	}
	return v, nil
}

// after checks the downloaded files, as downloaded (the torrent's files,
// before anything is assembled from them): exactly the manifest's, each
// with its SHA-256.
func (c *clientTrust) after(v *manifest.Verified, f *Fetched) error {
	if v == nil {
		return nil
	}
	var files []string
	err := filepath.WalkDir(f.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(f.Dir, p)
			files = append(files, filepath.ToSlash(rel))
		} else if !d.IsDir() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := v.CheckFileSet(files); err != nil {
		return fmt.Errorf("%w (key id %s)", err, v.KeyID)
	}
	if err := v.CheckFiles(f.Dir, nil); err != nil {
		return fmt.Errorf("%w (key id %s)", err, v.KeyID)
	}
	return nil
}

// fetchManifest is the real clientTrust.fetch: a bounded GET on the
// server's listener.
func (e *realEnv) fetchManifest(ctx context.Context, path string, limit int64) ([]byte, error) {
	return e.api.get(ctx, path, nil, limit)
}

// trustedHint is what the console suggests after a failed check.
const trustedHint = "that the OS on the server is the one that was signed (boottorrent check on the server shows its signature state); nothing was booted"

// newClientTrust reads the trust settings: --trust, else as /init the
// file baked into the initramfs.
func newClientTrust(cfg *Config, e *realEnv) (*clientTrust, error) {
	path := cfg.Trust
	if path == "" && cfg.Init {
		path = manifest.TrustPath
	}
	return loadTrust(path, e.fetchManifest)
}
