package client

import (
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// signedServer adds a signed manifest to the loopback test server, as
// boottorrent start serves it, signed with a fresh key; edit changes the
// manifest before it is signed (to sign what the server does not serve,
// the server's own check bypassed). It returns a trust file naming the
// key under policy.
func signedServer(t *testing.T, policy string, edit func(*manifest.Manifest)) (*testServer, string, string) {
	t.Helper()
	s := newTestServer(t, 300<<10, true)
	pub, sec, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	osDir := filepath.Join(s.dir, s.osName)
	files, err := manifest.HashFiles(osDir, []string{"config.yaml", "vmlinuz"})
	if err != nil {
		t.Fatal(err)
	}
	o := s.boot.Menu[0]
	m := &manifest.Manifest{Format: manifest.Format, Name: s.osName, Version: "1.0", Date: time.Now().UTC().Truncate(time.Second),
		InfoHash: s.mi.HashInfoBytes().HexString(), Boot: manifest.Boot{Method: o.Method, Kernel: o.Kernel}, Files: files}
	if edit != nil {
		edit(m)
	}
	body, sig, err := manifest.Sign(sec, m)
	if err != nil {
		t.Fatal(err)
	}
	srv := s.http.Config.Handler.(*http.ServeMux)
	srv.HandleFunc(bootapi.PathManifests+s.osName+".json", func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	srv.HandleFunc(bootapi.PathManifests+s.osName+".json.minisig", func(w http.ResponseWriter, r *http.Request) { w.Write(sig) })
	s.boot.Menu[0].Manifest = bootapi.PathManifests + s.osName + ".json"
	tb, _ := manifest.EncodeTrust(&manifest.Trust{Policy: policy, Keys: []string{pub.String()}})
	trust := filepath.Join(t.TempDir(), "trust.json")
	os.WriteFile(trust, tb, 0o644)
	return s, trust, manifest.KeyID(pub.ID())
}

// failedReport returns the failed report the server got, if any.
func failedReport(s *testServer) *bootapi.Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.reports {
		if s.reports[i].Stage == bootapi.StageFailed {
			return &s.reports[i]
		}
	}
	return nil
}

func TestTrustSignedBoots(t *testing.T) {
	s, trust, id := signedServer(t, manifest.PolicyRequire, nil)
	res, console, err := runClient(t, context.Background(), s, "52:54:00:00:30:01", func(c *Config) { c.Trust = trust })
	if err != nil || res == nil {
		t.Fatalf("signed OS not booted: %v\n%s", err, console)
	}
	if !strings.Contains(console, "every file matches the manifest signed by key "+id+" (version 1.0)") {
		t.Fatalf("console:\n%s", console)
	}
}

// TestTrustRefuses runs real clients (BitTorrent from a real seeder)
// against a server whose own check is bypassed: each refusal is shown on
// the console, reported as a failed machine, and nothing is booted.
func TestTrustRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		edit   func(*manifest.Manifest)
		serve  func(*testServer)
		want   []string
	}{
		{name: "tampered file", policy: manifest.PolicyRequire,
			// The signed hash is not the served file's: what a changed
			// file with a matching torrent would look like.
			edit: func(m *manifest.Manifest) { m.Files[1].SHA256 = strings.Repeat("0", 64) },
			want: []string{"file vmlinuz does not match the manifest: expected " + strings.Repeat("0", 64) + ", got ", "key id "}},
		{name: "other torrent", policy: manifest.PolicyIfPresent,
			edit: func(m *manifest.Manifest) { m.InfoHash = strings.Repeat("1", 40) },
			want: []string{"torrent info hash", "the manifest signed " + strings.Repeat("1", 40)}},
		{name: "changed cmdline", policy: manifest.PolicyRequire,
			serve: func(s *testServer) { s.boot.Menu[0].Cmdline = "init=/bin/sh" },
			want:  []string{"boot settings for testos differ from the signed ones"}},
		{name: "untrusted key", policy: manifest.PolicyRequire,
			serve: func(s *testServer) {}, // the trust file is replaced below
			want:  []string{"signed by a key that is not trusted (key id "}},
		{name: "unsigned under require", policy: manifest.PolicyRequire,
			serve: func(s *testServer) { s.boot.Menu[0].Manifest = "" },
			want:  []string{"this client boots only signed OSes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, trust, _ := signedServer(t, tc.policy, tc.edit)
			if tc.serve != nil {
				tc.serve(s)
			}
			if tc.name == "untrusted key" {
				other, _, _ := minisign.GenerateKey(rand.Reader)
				tb, _ := manifest.EncodeTrust(&manifest.Trust{Policy: tc.policy, Keys: []string{other.String()}})
				os.WriteFile(trust, tb, 0o644)
			}
			res, console, err := runClient(t, context.Background(), s, "52:54:00:00:30:02", func(c *Config) { c.Trust = trust; c.MaxAttempts = 1 })
			if res != nil || err == nil {
				t.Fatalf("booted anyway: %+v %v\n%s", res, err, console)
			}
			for _, w := range tc.want {
				if !strings.Contains(console, "signature check of testos failed") || !strings.Contains(console, w) {
					t.Fatalf("console lacks %q:\n%s", w, console)
				}
			}
			t.Logf("console:\n%s", console)
			r := failedReport(s)
			if r == nil || !strings.Contains(r.Message, tc.want[0]) || r.OS != "testos" {
				t.Fatalf("failed report %+v", r)
			}
			if strings.Contains(console, "booting testos") {
				t.Fatalf("went on to boot:\n%s", console)
			}
		})
	}
}
