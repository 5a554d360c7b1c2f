package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"aead.dev/minisign"
)

// Policies: what happens to an OS without a valid manifest.
const (
	// PolicyRequire serves and boots only OSes whose manifest verifies.
	PolicyRequire = "require"
	// PolicyIfPresent checks a manifest when an OS has one (a bad one is
	// refused) and lets unsigned OSes through.
	PolicyIfPresent = "if-present"
	// PolicyOff checks nothing.
	PolicyOff = "off"
)

// ValidPolicy reports whether p is one of the policies.
func ValidPolicy(p string) bool {
	return p == PolicyRequire || p == PolicyIfPresent || p == PolicyOff
}

// TrustPath is where the client initramfs holds the trust settings: baked
// in by the server when it builds the image, never taken from the
// network, since whoever answers on the LAN could name a key of their own.
const TrustPath = "/etc/boottorrent/trust.json"

// Trust is the trust settings as the client reads them (TrustPath).
type Trust struct {
	Policy string `json:"policy"`
	// Keys are minisign public keys, base64 ("RW…").
	Keys []string `json:"keys"`
}

// PublicKeys parses t's keys.
func (t *Trust) PublicKeys() ([]minisign.PublicKey, error) {
	var out []minisign.PublicKey
	for i, k := range t.Keys {
		pk, err := ParseKey([]byte(k))
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		out = append(out, pk)
	}
	return out, nil
}

// Effective is the policy actually applied: with no keys there is nothing
// to check a signature with, so if-present checks nothing.
func (t *Trust) Effective() string {
	if t.Policy == PolicyIfPresent && len(t.Keys) == 0 {
		return PolicyOff
	}
	return t.Policy
}

// ReadTrust reads a trust file (TrustPath in the initramfs).
func ReadTrust(path string) (*Trust, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Trust
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !ValidPolicy(t.Policy) {
		return nil, fmt.Errorf("%s: policy %q is not require, if-present or off", path, t.Policy)
	}
	if _, err := t.PublicKeys(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &t, nil
}

// EncodeTrust renders a trust file.
func EncodeTrust(t *Trust) ([]byte, error) {
	b, err := json.MarshalIndent(t, "", "  ")
	return append(b, '\n'), err
}

// ErrNeedPassword is returned by ReadSecretKey for an encrypted key when
// no password source was given.
var ErrNeedPassword = errors.New("the secret key is encrypted and no password was given")

// ReadSecretKey reads a minisign secret key file (`minisign -G`, or
// `boottorrent keygen`). An encrypted key is decrypted with the password
// password returns; a key made with `minisign -G -W` needs none.
func ReadSecretKey(path string, password func() (string, error)) (minisign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	if !minisign.IsEncrypted(b) {
		var k minisign.PrivateKey
		if err := k.UnmarshalText(bytes.TrimSpace(b)); err != nil {
			return k, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
	if password == nil {
		return minisign.PrivateKey{}, fmt.Errorf("%s: %w", path, ErrNeedPassword)
	}
	pw, err := password()
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	k, err := minisign.DecryptKey(pw, bytes.TrimSpace(b))
	if err != nil {
		return k, fmt.Errorf("%s: wrong password or damaged key: %w", path, err)
	}
	return k, nil
}
