package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/boottorrent/boottorrent/oss/manifest"
)

// Trust is which signed OSes the appliance and its clients accept
// (oss/manifest): minisign public keys and a policy.
type Trust struct {
	// Keys are minisign public keys: a file (`minisign -G`'s .pub,
	// relative to the project folder) or the key's base64 line ("RW…").
	Keys []string `yaml:"keys" limit:"64"`
	// Policy is require, if-present (the default) or off.
	Policy string `yaml:"policy"`

	// PublicKeys are Keys read and checked, as base64 lines; set by
	// validation.
	PublicKeys []string `yaml:"-"`
}

// validateTrust reads every key and checks the policy.
//
// The default policy is if-present: a project without keys works as it
// did, and once keys are listed a signed OS whose manifest does not verify
// is refused without the administrator having to remember a switch;
// require is for projects where every OS is signed.
func validateTrust(d *Decoded, p *Project) Problems {
	c := &p.Config.Trust
	var ps Problems
	prob := func(field, msg string) {
		ps = append(ps, Problem{File: d.File, Line: d.Lines.Line(field), Field: field, Msg: msg})
	}
	if !manifest.ValidPolicy(c.Policy) {
		prob("trust.policy", fmt.Sprintf("%q is not a policy; use require, if-present or off", c.Policy))
	}
	c.PublicKeys = nil
	seen := map[uint64]bool{}
	for i, k := range c.Keys {
		field := fmt.Sprintf("trust.keys[%d]", i)
		text := []byte(k)
		src := fmt.Sprintf("%q", k)
		if !strings.HasPrefix(strings.TrimSpace(k), "RW") {
			path := k
			if !filepath.IsAbs(path) {
				path = filepath.Join(p.Dir, path)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				prob(field, fmt.Sprintf("cannot read %s: %v; name a minisign public key file (minisign -G writes one) or write the key's RW… line", path, err))
				continue
			}
			text, src = b, path
		}
		pk, err := manifest.ParseKey(text)
		if err != nil {
			prob(field, fmt.Sprintf("%s is not a minisign public key (%v); use the .pub file of minisign -G or boottorrent keygen, never the secret key", src, err))
			continue
		}
		if seen[pk.ID()] {
			prob(field, fmt.Sprintf("key %s is listed twice; remove one", manifest.KeyID(pk.ID())))
			continue
		}
		seen[pk.ID()] = true
		c.PublicKeys = append(c.PublicKeys, pk.String())
	}
	if c.Policy == manifest.PolicyRequire && len(c.Keys) == 0 {
		prob("trust.policy", "require needs at least one key in trust.keys; list the public key of the key that signs your OSes (boottorrent keygen, or minisign -G)")
	}
	return ps
}

// TrustSettings is the trust as the boot client reads it.
func (c *Config) TrustSettings() *manifest.Trust {
	return &manifest.Trust{Policy: c.Trust.Policy, Keys: append([]string(nil), c.Trust.PublicKeys...)}
}
