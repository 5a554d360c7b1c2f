package cli

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/netboot"
	"github.com/boottorrent/boottorrent/netboot/metrics"
	"github.com/boottorrent/boottorrent/seeder"
)

// declaredPaths are the Path* constants of the boot API contract, read
// from its source so that a path added there is checked here too.
func declaredPaths(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "..", "initramfs", "bootapi", "bootapi.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			v := sp.(*ast.ValueSpec)
			for i, n := range v.Names {
				if !strings.HasPrefix(n.Name, "Path") || i >= len(v.Values) {
					continue
				}
				if lit, ok := v.Values[i].(*ast.BasicLit); ok {
					out[n.Name], _ = strconv.Unquote(lit.Value)
				}
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d paths in bootapi: %v", len(out), out)
	}
	return out
}

// testParts are the appliance's parts for a project on loopback, not
// started.
func testParts(t *testing.T) (*config.Project, *seeder.Seeder) {
	t.Helper()
	c := config.Default()
	c.Server.Interface, c.Server.Address, c.Server.HTTPPort = "lo", "127.0.0.1", 8080
	p := &config.Project{Dir: t.TempDir(), Config: &c, Prefix: netip.MustParsePrefix("127.0.0.0/8")}
	sd, err := seeder.New(seeder.Options{Project: p, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Close() })
	return p, sd
}

// TestSurfaceServesEveryPath: every path the contract declares is served
// by some part on the assembled surface (a forgotten registration was a
// silent 404), and an undeclared path is not.
func TestSurfaceServesEveryPath(t *testing.T) {
	p, sd := testParts(t)
	o, err := netbootOptions(p)
	if err != nil {
		t.Fatal(err)
	}
	o.Catalog = sd
	nb, err := netboot.New(o) // routes only: nothing is started
	if err != nil {
		t.Fatal(err)
	}
	mt := metrics.New("test")
	m := surface(mt, nb, sd, newDashboard(nb), mt)
	for name, path := range declaredPaths(t) {
		method, target := http.MethodGet, path
		switch {
		case name == "PathReport":
			method = http.MethodPost
		case name == "PathDashboard":
		case strings.HasSuffix(path, "/"):
			target += "x/y"
			if name == "PathTorrents" {
				target = path + "x.torrent"
			}
		}
		r := httptest.NewRequest(method, target, nil)
		if pat := m.Pattern(r); pat == "" || pat == "/" {
			t.Errorf("%s (%s %s) is not served (pattern %q)", name, method, target, pat)
		}
	}
	if pat := m.Pattern(httptest.NewRequest(http.MethodGet, "/api/v1/nope", nil)); pat != "/" {
		t.Errorf("an undeclared path is served by %q", pat)
	}
}

// TestStartErrorsSayEachPartOnce: an error from starting a part names each
// layer once ("netboot: dhcp: …", never "netboot: netboot: …").
func TestStartErrorsSayEachPartOnce(t *testing.T) {
	p, _ := testParts(t)
	a := &appliance{log: slog.New(slog.DiscardHandler)}
	defer a.close()
	o, err := netbootOptions(p)
	if err != nil {
		t.Fatal(err)
	}
	o.Interface = "bt-no-such-if0"
	_, nbErr := startNetboot(context.Background(), a, o)
	// A UDP port taken makes the seeder's start fail.
	taken, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, sdErr := startSeeder(context.Background(), a, seeder.Options{Project: p, ListenAddr: taken.LocalAddr().String(), NoSeed: true})
	for _, err := range []error{nbErr, sdErr} {
		if err == nil {
			t.Fatal("start did not fail")
		}
		parts := strings.Split(err.Error(), ": ")
		for i := 1; i < len(parts); i++ {
			if parts[i] == parts[i-1] {
				t.Errorf("%q says %q twice", err, parts[i])
			}
		}
		t.Log(err)
	}
}
