package cli

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/boottorrent/boottorrent/"

// deps lists the packages of this module that pkg imports, directly or
// not (go list -deps), without the module prefix.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", module+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var own []string
	for _, p := range strings.Fields(string(out)) {
		if rest, ok := strings.CutPrefix(p, module); ok && rest != pkg {
			own = append(own, rest)
		}
	}
	return own
}

// TestLayering pins the layering, in the spirit of tailscale's
// deps_test.go:
//   - the boot client (initramfs/client and what it imports) is linked
//     into the binary every machine loads over the network: it imports no
//     server package (netboot/..., seeder/... except seeder/btlan, cmd/...,
//     config, oss except oss/manifest, which imports no package of ours);
//   - the protocol packages (DHCP, TFTP, tracker, web seed, the boot API
//     contract) import no product policy (seeder/swarm, netboot/registry,
//     netboot/bootserver, config, oss);
//   - netboot takes typed options: it imports neither config nor oss;
//   - the operator's view (netboot/dashboard, netboot/metrics) reads the
//     parts through small interfaces: neither imports config, oss, the
//     seeder or cmd; the page knows no protocol at all, and the protocol
//     packages import neither (they define the hooks metrics implements);
//   - config does not import the server's parts.
func TestLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("needs the go command to list packages: %v", err)
	}
	policy := []string{"seeder/swarm", "netboot/registry", "netboot/bootserver", "netboot/dashboard", "netboot/metrics", "config", "oss", "cmd"}
	for _, c := range []struct {
		pkg       string
		forbidden []string // package path prefixes; "" forbids every package of the module
		allowed   []string // exceptions
	}{
		{"initramfs/client", []string{"netboot", "seeder", "cmd", "config", "oss"}, []string{"seeder/btlan", "oss/manifest"}},
		{"oss/manifest", []string{""}, nil},
		{"initramfs/bootapi", []string{""}, nil},
		{"initramfs/logging", []string{""}, nil},
		{"seeder/btlan", []string{"netboot", "seeder", "cmd", "config", "oss"}, nil},
		{"netboot/dhcp", policy, nil},
		{"netboot/tftpd", policy, nil},
		{"seeder/tracker", policy, nil},
		{"seeder/webseed", policy, nil},
		{"seeder/swarm", []string{"netboot", "seeder/btlan", "seeder/tracker", "config", "oss", "cmd"}, nil},
		{"netboot", []string{"config", "oss", "cmd", "netboot/dashboard", "netboot/metrics"}, nil},
		{"netboot/dashboard", []string{"netboot", "seeder", "config", "oss", "cmd"}, nil},
		{"netboot/metrics", []string{"seeder", "config", "oss", "cmd", "netboot/dashboard", "netboot/bootserver"}, nil},
		{"config", []string{"netboot", "seeder", "initramfs", "cmd"}, nil},
	} {
		for _, d := range deps(t, c.pkg) {
			bad := false
			for _, f := range c.forbidden {
				bad = bad || f == "" || d == f || strings.HasPrefix(d, f+"/")
			}
			for _, a := range c.allowed {
				bad = bad && d != a
			}
			if bad {
				t.Errorf("%s imports %s", c.pkg, d)
			}
		}
	}
}
