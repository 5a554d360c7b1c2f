package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// TestStartTrustRequire runs the real binary: keygen, sign, then start
// under trust.policy require in a namespace. A signed OS is served with
// its manifest; a tampered file, a manifest signed by an untrusted key and
// an unsigned OS are refused with a message naming the OS and why, and
// are not in the menu. Then an older manifest put back is refused at the
// next start.
func TestStartTrustRequire(t *testing.T) {
	binary, srv, cli, dir, write := serverLab(t, "10.78.0.1/24", "10.78.0.2/24")
	cmd := func(args ...string) string {
		t.Helper()
		c := srv.Command(context.Background(), binary, args...)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("boottorrent %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cmd("keygen", "--out", filepath.Join(dir, "keys/lab"), "--no-password")
	cmd("keygen", "--out", filepath.Join(dir, "keys/stranger"), "--no-password")
	write("Boottorrent.yaml", []byte("version: 1\nserver:\n  interface: eth0\ndhcp:\n  mode: off\ntftp:\n  enabled: false\ntrust:\n  keys: [keys/lab.pub]\n  policy: require\n"))
	for _, n := range []string{"good", "tampered", "stranger", "unsigned"} {
		payload := make([]byte, 256<<10)
		rand.Read(payload)
		write("oss/"+n+"/config.yaml", []byte("dispname: "+n+"\nmethod: bin\nbin: payload.bin\n"))
		write("oss/"+n+"/payload.bin", payload)
	}
	cmd("sign", filepath.Join(dir, "oss/good"), "--key", filepath.Join(dir, "keys/lab.key"), "--version", "1")
	old, _ := os.ReadFile(filepath.Join(dir, "oss/good", manifest.FileName))
	oldSig, _ := os.ReadFile(filepath.Join(dir, "oss/good", manifest.SigName))
	time.Sleep(1100 * time.Millisecond) // a later date, to the second
	cmd("sign", filepath.Join(dir, "oss/good"), "--key", filepath.Join(dir, "keys/lab.key"), "--version", "2")
	cmd("sign", filepath.Join(dir, "oss/tampered"), "--key", filepath.Join(dir, "keys/lab.key"))
	cmd("sign", filepath.Join(dir, "oss/stranger"), "--key", filepath.Join(dir, "keys/stranger.key"))
	// Same size, one byte changed after signing.
	p := filepath.Join(dir, "oss/tampered/payload.bin")
	b, _ := os.ReadFile(p)
	b[1000] ^= 1
	os.WriteFile(p, b, 0o644)

	check := cmd("check", "--dir", dir)
	for _, w := range []string{"good      signed by ", "version 2", "stranger  INVALID: signed by a key that is not trusted", "unsigned  unsigned — not served under require"} {
		if !strings.Contains(check, w) {
			t.Errorf("check lacks %q:\n%s", w, check)
		}
	}

	start := func() (*logBuffer, func()) {
		log := &logBuffer{exited: make(chan struct{})}
		c := srv.Command(context.Background(), binary, "start", "--dir", dir)
		c.Stderr, c.Stdout = log, log
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { c.Wait(); close(log.exited) }()
		stop := func() { c.Process.Kill(); <-log.exited }
		t.Cleanup(stop)
		log.waitFor(t, "msg=ready", 4*time.Minute)
		return log, stop
	}
	log, stop := start()
	for _, w := range []string{
		"OS tampered: OS refused by trust.policy (trust.policy require): signed by ",
		"the files changed since they were signed; sign again",
		"OS stranger: OS refused by trust.policy (trust.policy require): signed by a key that is not trusted (key id ",
		"OS unsigned: OS refused by trust.policy (trust.policy require): not signed",
		`msg="OS signature verified" component=seeder os=good`,
	} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("start log lacks %q:\n%s", w, log.String())
		}
	}
	c := cli.HTTPClient(20 * time.Second)
	base := "http://10.78.0.1:8080"
	var oses []bootapi.OS
	if err := json.Unmarshal(get(t, c, base+bootapi.PathOSList), &oses); err != nil {
		t.Fatal(err)
	}
	if len(oses) != 1 || oses[0].Name != "good" || oses[0].Manifest != bootapi.PathManifests+"good.json" {
		t.Fatalf("served OSes: %+v", oses)
	}
	// What the client fetches verifies with Debian's minisign.
	mdir := t.TempDir()
	os.WriteFile(filepath.Join(mdir, "m.json"), get(t, c, base+oses[0].Manifest), 0o644)
	os.WriteFile(filepath.Join(mdir, "m.json.minisig"), get(t, c, base+oses[0].Manifest+".minisig"), 0o644)
	if _, err := exec.LookPath("minisign"); err == nil {
		out, err := exec.Command("minisign", "-V", "-p", filepath.Join(dir, "keys/lab.pub"), "-m", filepath.Join(mdir, "m.json")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "name=good version=2") {
			t.Fatalf("minisign -V of the served manifest: %v\n%s", err, out)
		}
	}
	stop()

	// The version 1 manifest put back: refused, since version 2 was
	// served.
	os.WriteFile(filepath.Join(dir, "oss/good", manifest.FileName), old, 0o644)
	os.WriteFile(filepath.Join(dir, "oss/good", manifest.SigName), oldSig, 0o644)
	log, _ = start()
	if !strings.Contains(log.String(), "version 1 of ") || !strings.Contains(log.String(), "is older than version 2") {
		t.Errorf("older manifest not refused:\n%s", log.String())
	}
}
