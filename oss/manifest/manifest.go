// Package manifest is the signed description of one OS folder: the SHA-256
// of every file a boot client downloads, the torrent's info hashes and the
// boot parameters, signed with minisign (Ed25519) with the OS name, version
// and date in the signed trusted comment. `boottorrent sign` writes it,
// `boottorrent start` checks it before serving the OS, and the boot client
// checks it with the keys baked into its initramfs before it boots.
//
// The package imports only the standard library and aead.dev/minisign: it
// is linked into the boot client, which every machine loads over the
// network (cmd/internal/cli/deps_test.go). It knows neither config files
// nor the network: callers hand it bytes, keys and folders.
package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"aead.dev/minisign"
)

// File names in the OS folder, next to config.yaml. They are not part of
// the OS's torrent: the manifest names the torrent's info hash, so it
// cannot be one of its files.
const (
	FileName = "manifest.json"
	SigName  = FileName + ".minisig"
)

// Format is the manifest's schema version.
const Format = 1

// Limits for what arrives from the network: the oss/ loader allows 10,000
// files per OS, each line of the manifest is well under 400 bytes.
const (
	MaxBytes    = 4 << 20
	MaxSigBytes = 4 << 10
	maxFiles    = 10000
)

// Manifest is manifest.json.
type Manifest struct {
	Format  int       `json:"format"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Date    time.Time `json:"date"`
	// InfoHash is the hex info hash of the torrent the appliance serves
	// (private, BEP 27); PublicInfoHash the one `publish` writes (the
	// same pieces, not private). A client accepts either.
	InfoHash       string `json:"info_hash"`
	PublicInfoHash string `json:"public_info_hash,omitempty"`
	// Boot is how the client starts the OS: the boot API's entry must
	// say the same, or a network attacker could boot signed files with
	// a command line of their own (init=/bin/sh).
	Boot  Boot   `json:"boot"`
	Files []File `json:"files"`
}

// Boot is the part of an OS's config.yaml the client acts on.
type Boot struct {
	Method  string   `json:"method"`
	Kernel  string   `json:"kernel,omitempty"`
	Initrd  string   `json:"initrd,omitempty"`
	Cmdline string   `json:"cmdline,omitempty"`
	Bin     string   `json:"bin,omitempty"`
	BinArgs []string `json:"binargs,omitempty"`
	Args    []string `json:"args,omitempty"`
}

// Equal reports whether b and o say the same (nil and empty lists alike).
func (b Boot) Equal(o Boot) bool {
	return b.Method == o.Method && b.Kernel == o.Kernel && b.Initrd == o.Initrd && b.Cmdline == o.Cmdline &&
		b.Bin == o.Bin && slices.Equal(b.BinArgs, o.BinArgs) && slices.Equal(b.Args, o.Args)
}

// File is one downloaded file.
type File struct {
	Path   string `json:"path"` // relative, slash-separated, as in the torrent
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// versionRe keeps versions on one word of the trusted comment.
var versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// ValidVersion reports whether v may be a manifest version.
func ValidVersion(v string) bool { return versionRe.MatchString(v) }

// DefaultVersion is the version `sign` uses when none is given: the date.
func DefaultVersion(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

var hexRe = regexp.MustCompile(`^[0-9a-f]+$`)

// Check validates a decoded manifest's fields.
func (m *Manifest) Check() error {
	switch {
	case m.Format != Format:
		return fmt.Errorf("format %d, this boottorrent reads %d", m.Format, Format)
	case m.Name == "" || strings.ContainsAny(m.Name, " /\\\x00\r\n") || len(m.Name) > 63:
		return fmt.Errorf("bad OS name %q", m.Name)
	case !ValidVersion(m.Version):
		return fmt.Errorf("bad version %q", m.Version)
	case m.Date.IsZero():
		return errors.New("no date")
	case len(m.InfoHash) != 40 || !hexRe.MatchString(m.InfoHash):
		return fmt.Errorf("bad info hash %q", m.InfoHash)
	case m.PublicInfoHash != "" && (len(m.PublicInfoHash) != 40 || !hexRe.MatchString(m.PublicInfoHash)):
		return fmt.Errorf("bad public info hash %q", m.PublicInfoHash)
	case len(m.Files) == 0 || len(m.Files) > maxFiles:
		return fmt.Errorf("%d files", len(m.Files))
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if !validRel(f.Path) || seen[f.Path] {
			return fmt.Errorf("bad or repeated file path %q", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 || len(f.SHA256) != 64 || !hexRe.MatchString(f.SHA256) {
			return fmt.Errorf("file %s: bad size or sha256", f.Path)
		}
	}
	return nil
}

func validRel(p string) bool {
	return p != "" && !path.IsAbs(p) && path.Clean(p) == p && p != "." && !strings.HasPrefix(p, "../") &&
		p != ".." && !strings.ContainsAny(p, "\\\x00")
}

// TrustedComment is the signed comment for m: minisign signs it together
// with the signature, so name, version and date cannot be changed, and an
// older manifest of the same key is told apart from a newer one.
func TrustedComment(m *Manifest) string {
	return fmt.Sprintf("boottorrent-manifest name=%s version=%s date=%s", m.Name, m.Version, m.Date.UTC().Format(time.RFC3339))
}

// Encode renders m as manifest.json (indented, newline at the end).
func Encode(m *Manifest) ([]byte, error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Sign encodes m and signs it with key: manifest.json and its .minisig.
func Sign(key minisign.PrivateKey, m *Manifest) (body, sig []byte, err error) {
	body, err = Encode(m)
	if err != nil {
		return nil, nil, err
	}
	sig = minisign.SignWithComments(key, body, TrustedComment(m), "signature from boottorrent secret key "+KeyID(key.ID()))
	return body, sig, nil
}

// KeyID formats a minisign key ID as minisign prints it.
func KeyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// Sentinels callers branch on; errors wrap them with what failed.
var (
	ErrUntrustedKey = errors.New("signed by a key that is not trusted")
	ErrBadSignature = errors.New("bad signature")
	ErrMismatch     = errors.New("does not match the manifest")
)

// Verified is a manifest whose signature checked out.
type Verified struct {
	*Manifest
	KeyID   string // the trusted key that signed it
	Comment string // the trusted comment
}

// Verify checks sig over body with the trusted keys, decodes the manifest
// and checks that the trusted comment names the same OS, version and date.
// Both byte slices may come from the network.
func Verify(body, sig []byte, keys []minisign.PublicKey) (*Verified, error) {
	if len(body) > MaxBytes || len(sig) > MaxSigBytes {
		return nil, fmt.Errorf("%w: manifest or signature too large", ErrBadSignature)
	}
	var s minisign.Signature
	if err := s.UnmarshalText(bytes.TrimSpace(sig)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	id := KeyID(s.KeyID)
	var key *minisign.PublicKey
	for i := range keys {
		if keys[i].ID() == s.KeyID {
			key = &keys[i]
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w (key id %s)", ErrUntrustedKey, id)
	}
	if !minisign.Verify(*key, body, bytes.TrimSpace(sig)) {
		return nil, fmt.Errorf("%w (key id %s): the manifest or its trusted comment was changed after signing", ErrBadSignature, id)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest signed by %s: %w", id, err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("manifest signed by %s: %w", id, err)
	}
	if want := TrustedComment(&m); s.TrustedComment != want {
		return nil, fmt.Errorf("%w (key id %s): trusted comment %q does not describe the manifest (%q)", ErrBadSignature, id, s.TrustedComment, want)
	}
	return &Verified{Manifest: &m, KeyID: id, Comment: s.TrustedComment}, nil
}

// ParseKey reads a public key: a minisign .pub file's content or its
// base64 line ("RW…").
func ParseKey(text []byte) (minisign.PublicKey, error) {
	var k minisign.PublicKey
	if err := k.UnmarshalText(bytes.TrimSpace(text)); err != nil {
		return k, err
	}
	return k, nil
}

// FileMismatch says which file failed and how.
type FileMismatch struct {
	File          string
	Expected, Got string // hex SHA-256, or a size or "missing"/"not in the manifest"
}

func (e *FileMismatch) Error() string {
	return fmt.Sprintf("file %s %v: expected %s, got %s", e.File, ErrMismatch, e.Expected, e.Got)
}

func (e *FileMismatch) Unwrap() error { return ErrMismatch }

// CheckFileSet checks that files (the torrent's) are exactly the
// manifest's, so no file is downloaded without a hash to check.
func (m *Manifest) CheckFileSet(files []string) error {
	want := map[string]bool{}
	for _, f := range m.Files {
		want[f.Path] = true
	}
	for _, f := range files {
		if !want[f] {
			return &FileMismatch{File: f, Expected: "no such file", Got: "a file not in the manifest"}
		}
		delete(want, f)
	}
	for _, f := range m.Files {
		if want[f.Path] {
			return &FileMismatch{File: f.Path, Expected: "the file", Got: "missing"}
		}
	}
	return nil
}

// HashFile returns the hex SHA-256 and size of one file.
func HashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// HashFiles hashes files (relative slash paths) under dir, in order.
func HashFiles(dir string, files []string) ([]File, error) {
	out := make([]File, 0, len(files))
	for _, f := range files {
		sum, n, err := HashFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return nil, err
		}
		out = append(out, File{Path: f, Size: n, SHA256: sum})
	}
	return out, nil
}

// CheckFiles hashes every file of the manifest under dir and returns a
// *FileMismatch for the first that differs. progress, when set, is called
// before each file.
func (m *Manifest) CheckFiles(dir string, progress func(File)) error {
	for _, f := range m.Files {
		if progress != nil {
			progress(f)
		}
		sum, n, err := HashFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if errors.Is(err, os.ErrNotExist) {
			return &FileMismatch{File: f.Path, Expected: f.SHA256, Got: "missing"}
		}
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		if n != f.Size {
			return &FileMismatch{File: f.Path, Expected: fmt.Sprintf("%d bytes (sha256 %s)", f.Size, f.SHA256), Got: fmt.Sprintf("%d bytes (sha256 %s)", n, sum)}
		}
		if sum != f.SHA256 {
			return &FileMismatch{File: f.Path, Expected: f.SHA256, Got: sum}
		}
	}
	return nil
}
