package seeder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// ErrUntrusted is wrapped by the error of an OS that is not served
// because its manifest does not verify under trust.policy (or is missing
// under require). The other OSes are served.
var ErrUntrusted = errors.New("OS refused by trust.policy")

// signedOS is an OS's manifest as verified at Start: the bytes served to
// clients are these, not whatever is on disk later.
type signedOS struct {
	v         *manifest.Verified
	body, sig []byte
}

// trustDir holds, per OS, the newest manifest the appliance served
// (out/trust/<name>.json), so that an older signed manifest put back in
// the folder is refused.
const trustDir = "trust"

// seenManifest is out/trust/<name>.json.
type seenManifest struct {
	Version string    `json:"version"`
	Date    time.Time `json:"date"`
	KeyID   string    `json:"key_id"`
}

// readManifest reads an OS folder's manifest and signature; both nil
// when the OS is unsigned.
func readManifest(o *oss.OS) (body, sig []byte, err error) {
	read := func(name string, limit int64) ([]byte, error) {
		f, err := os.Open(filepath.Join(o.Dir, name))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, limit+1))
		if err == nil && int64(len(b)) > limit {
			err = fmt.Errorf("%s is larger than %d bytes", name, limit)
		}
		return b, err
	}
	body, err = read(manifest.FileName, manifest.MaxBytes)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(o.Dir, manifest.SigName)); serr == nil {
			return nil, nil, fmt.Errorf("%s is there but %s is missing; sign again (boottorrent sign oss/%s --key …)", manifest.SigName, manifest.FileName, o.Name)
		}
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	sig, err = read(manifest.SigName, manifest.MaxSigBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s has no signature %s; sign it (boottorrent sign oss/%s --key …)", manifest.FileName, manifest.SigName, o.Name)
	}
	return body, sig, err
}

// VerifyManifest checks an OS's manifest without reading its images: the
// signature with the project's trusted keys, the OS name, the boot
// settings and the file list against config.yaml, and the info hash when
// one is given (hex; "" skips it). It returns (nil, nil, nil) for an
// unsigned OS, and the signed OS's error otherwise. `boottorrent check`
// shows the result; Start adds the SHA-256 of every file.
func VerifyManifest(p *config.Project, o *oss.OS, infoHash string) (*manifest.Verified, []byte, []byte, error) {
	body, sig, err := readManifest(o)
	if err != nil || body == nil {
		return nil, nil, nil, err
	}
	t := p.Config.TrustSettings()
	keys, err := t.PublicKeys()
	if err != nil {
		return nil, nil, nil, err
	}
	v, err := manifest.Verify(body, sig, keys)
	if errors.Is(err, manifest.ErrUntrustedKey) {
		return nil, nil, nil, fmt.Errorf("%w; add its public key to trust.keys in %s if you trust it", err, config.FileName)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	switch {
	case v.Name != o.Name:
		err = fmt.Errorf("the manifest is for OS %q, not %q (copied from another folder?); sign this one", v.Name, o.Name)
	case !v.Boot.Equal(o.ManifestBoot()):
		err = fmt.Errorf("%s's boot settings (method, kernel, initrd, cmdline, bin, args) differ from the signed ones; sign again after changing them", oss.ConfigName)
	case infoHash != "" && !strings.EqualFold(v.InfoHash, infoHash):
		err = fmt.Errorf("the torrent's info hash is %s, the manifest signed %s: the files changed since they were signed; sign again", infoHash, v.InfoHash)
	default:
		err = v.CheckFileSet(o.Files)
		if err != nil {
			err = fmt.Errorf("%w: the OS's file list changed since it was signed; sign again", err)
		}
	}
	if err != nil {
		return v, nil, nil, fmt.Errorf("signed by %s, version %s: %w", v.KeyID, v.Version, err)
	}
	return v, body, sig, nil
}

// checkTrust applies trust.policy to one OS before it is served: it
// returns the verified manifest (nil for an unsigned OS that the policy
// lets through) or an error wrapping ErrUntrusted.
func (s *Seeder) checkTrust(st *osState, ih metainfo.Hash) (*signedOS, error) {
	p, o := s.opts.Project, st.os
	t := p.Config.TrustSettings()
	policy := t.Effective()
	if policy == manifest.PolicyOff {
		return nil, nil
	}
	refuse := func(err error) error {
		return fmt.Errorf("OS %s: %w (trust.policy %s): %w", o.Name, ErrUntrusted, t.Policy, err)
	}
	v, body, sig, err := VerifyManifest(p, o, ih.HexString())
	if err != nil {
		return nil, refuse(err)
	}
	if v == nil {
		if policy == manifest.PolicyRequire {
			return nil, refuse(fmt.Errorf("not signed; sign it (boottorrent sign oss/%s --key SECRET) or set trust.policy if-present", o.Name))
		}
		return nil, nil
	}
	// The info hash binds the data to the pieces just verified; the
	// SHA-256 of each file is what the clients check, so the server
	// checks the same before it offers them.
	t0 := time.Now()
	if err := v.CheckFiles(o.Dir, nil); err != nil {
		return nil, refuse(fmt.Errorf("signed by %s, version %s: %w", v.KeyID, v.Version, err))
	}
	seenPath := filepath.Join(p.OutDir(), trustDir, o.Name+".json")
	var seen seenManifest
	if b, err := os.ReadFile(seenPath); err == nil && json.Unmarshal(b, &seen) == nil && v.Date.Before(seen.Date) {
		return nil, refuse(fmt.Errorf("version %s of %s is older than version %s of %s served before: an older manifest was put back; sign the current files again, or remove %s to roll back on purpose",
			v.Version, v.Date.Format(time.RFC3339), seen.Version, seen.Date.Format(time.RFC3339), seenPath))
	}
	if !v.Date.Equal(seen.Date) {
		b, _ := json.MarshalIndent(seenManifest{Version: v.Version, Date: v.Date, KeyID: v.KeyID}, "", "  ")
		if err := oss.WriteFileAtomic(seenPath, b); err != nil {
			s.log.Warn("newest manifest not recorded; an older one would not be noticed", "os", o.Name, "err", err)
		}
	}
	s.log.Info("OS signature verified", "os", o.Name, "key_id", v.KeyID, "version", v.Version, "date", v.Date,
		"files", len(v.Files), "sha256_duration", time.Since(t0).Round(time.Millisecond))
	return &signedOS{v: v, body: body, sig: sig}, nil
}

// serveManifest serves /manifests/<name>.json and its .minisig: the bytes
// verified at Start. The client checks them with its own keys.
func (s *Seeder) serveManifest(w http.ResponseWriter, r *http.Request) {
	file := strings.TrimPrefix(r.URL.Path, bootapi.PathManifests)
	name, isSig := strings.CutSuffix(file, ".json.minisig")
	if !isSig {
		var ok bool
		if name, ok = strings.CutSuffix(file, ".json"); !ok {
			http.NotFound(w, r)
			return
		}
	}
	s.mu.Lock()
	var sg *signedOS
	if st := s.byName[name]; st != nil && st.ready && st.failed == nil {
		sg = st.signed
	}
	s.mu.Unlock()
	if sg == nil {
		http.NotFound(w, r)
		return
	}
	body, ctype := sg.body, "application/json"
	if isSig {
		body, ctype = sg.sig, "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(body)
}
