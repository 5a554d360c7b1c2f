package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/internal/testfile"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// signProject makes a project with one kexec OS and a key pair made by
// keygen, trusted in Boottorrent.yaml under policy.
func signProject(t *testing.T, policy string) (dir, key string) {
	t.Helper()
	dir = t.TempDir()
	env, _, errb := testEnv(t, dir)
	if code := Main([]string{"keygen", "--out", filepath.Join(dir, "keys/lab"), "--no-password"}, env); code != 0 {
		t.Fatalf("keygen: %s", errb.String())
	}
	if fi, err := os.Stat(filepath.Join(dir, "keys/lab.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret key file: %v %v", fi, err)
	}
	testfile.Write(t, filepath.Join(dir, config.FileName), "version: 1\ntrust:\n  keys: [keys/lab.pub]\n  policy: "+policy+"\n")
	testfile.Write(t, filepath.Join(dir, "oss/debian/config.yaml"), "method: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\n")
	testfile.Write(t, filepath.Join(dir, "oss/debian/vmlinuz"), strings.Repeat("k", 5000))
	testfile.Write(t, filepath.Join(dir, "oss/debian/initrd.img"), strings.Repeat("i", 70000))
	return dir, filepath.Join(dir, "keys/lab.key")
}

func TestSignCheck(t *testing.T) {
	dir, key := signProject(t, "require")
	env, out, errb := testEnv(t, "/nonexistent")
	if code := Main([]string{"sign", filepath.Join(dir, "oss/debian"), "--key", key, "--version", "12.7"}, env); code != 0 {
		t.Fatalf("sign: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "signed debian: version 12.7") || strings.Contains(out.String(), "not in trust.keys") {
		t.Fatalf("sign said: %s", out.String())
	}
	// The OS's file list does not take in its own manifest.
	check := func() string {
		t.Helper()
		env, out, errb := testEnv(t, dir)
		if code := Main([]string{"check"}, env); code != 0 {
			t.Fatalf("check: exit %d: %s", code, errb.String())
		}
		return out.String()
	}
	if s := check(); !strings.Contains(s, "Trust     policy require; keys ") || !strings.Contains(s, "debian  signed by ") || !strings.Contains(s, "version 12.7") || !strings.Contains(s, "  3  ") {
		t.Fatalf("check after sign:\n%s", s)
	}
	if _, err := exec.LookPath("minisign"); err == nil {
		out, err := exec.Command("minisign", "-V", "-p", filepath.Join(dir, "keys/lab.pub"), "-m", filepath.Join(dir, "oss/debian", manifest.FileName)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "comment: boottorrent-manifest name=debian version=12.7") {
			t.Fatalf("minisign -V: %v\n%s", err, out)
		}
	}
	// A changed command line is caught by check (the boot settings are
	// signed).
	testfile.Write(t, filepath.Join(dir, "oss/debian/config.yaml"), "method: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: init=/bin/sh\n")
	if s := check(); !strings.Contains(s, "debian  INVALID: signed by") || !strings.Contains(s, "boot settings") {
		t.Fatalf("check after changing cmdline:\n%s", s)
	}
	// A manifest signed by a key that is not trusted.
	env, _, _ = testEnv(t, dir)
	Main([]string{"keygen", "--out", filepath.Join(dir, "keys/other"), "--no-password"}, env)
	testfile.Write(t, filepath.Join(dir, "oss/debian/config.yaml"), "method: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\n")
	env, out, errb = testEnv(t, dir)
	if code := Main([]string{"sign", "oss/debian", "--key", filepath.Join(dir, "keys/other.key")}, env); code != 0 {
		t.Fatalf("sign: %s", errb.String())
	}
	if !strings.Contains(out.String(), "is not in trust.keys") {
		t.Fatalf("sign with an untrusted key said: %s", out.String())
	}
	if s := check(); !strings.Contains(s, "signed by a key that is not trusted") {
		t.Fatalf("check with an untrusted signature:\n%s", s)
	}
}

func TestSignEncryptedKey(t *testing.T) {
	dir, _ := signProject(t, "if-present")
	pw := filepath.Join(dir, "pw")
	testfile.Write(t, pw, "secret words\n")
	env, _, errb := testEnv(t, dir)
	if code := Main([]string{"keygen", "--out", filepath.Join(dir, "keys/enc"), "--password-file", pw}, env); code != 0 {
		t.Fatalf("keygen: %s", errb.String())
	}
	env, _, errb = testEnv(t, dir)
	if code := Main([]string{"sign", "oss/debian", "--key", filepath.Join(dir, "keys/enc.key")}, env); code != 1 || !strings.Contains(errb.String(), "stdin is not a terminal") && !strings.Contains(errb.String(), "password") {
		t.Fatalf("sign without a password: exit %d: %s", code, errb.String())
	}
	t.Setenv(passwordEnv, "secret words")
	env, out, errb := testEnv(t, dir)
	if code := Main([]string{"sign", "oss/debian", "--key", filepath.Join(dir, "keys/enc.key")}, env); code != 0 {
		t.Fatalf("sign with $%s: %s", passwordEnv, errb.String())
	}
	if !strings.Contains(out.String(), "signed debian: version 20") {
		t.Fatalf("default version: %s", out.String())
	}
}
