package manifest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
)

func testManifest(t *testing.T, dir string) *Manifest {
	t.Helper()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel bytes"), 0o644)
	os.MkdirAll(filepath.Join(dir, "live"), 0o755)
	os.WriteFile(filepath.Join(dir, "live", "initrd.img"), []byte("initrd bytes"), 0o644)
	files, err := HashFiles(dir, []string{"live/initrd.img", "vmlinuz"})
	if err != nil {
		t.Fatal(err)
	}
	return &Manifest{Format: Format, Name: "debian", Version: "12.7", Date: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC),
		InfoHash: strings.Repeat("ab", 20), Boot: Boot{Method: "kexec", Kernel: "vmlinuz", Initrd: "live/initrd.img", Cmdline: "quiet"},
		Files: files}
}

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := minisign.GenerateKey(rand.Reader)
	m := testManifest(t, dir)
	body, sig, err := Sign(priv, m)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(body, sig, []minisign.PublicKey{other, pub})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.KeyID != KeyID(pub.ID()) || v.Version != "12.7" || v.Name != "debian" || !v.Boot.Equal(m.Boot) {
		t.Fatalf("verified %+v", v)
	}
	if err := v.CheckFiles(dir, nil); err != nil {
		t.Fatalf("files: %v", err)
	}
	if err := v.CheckFileSet([]string{"vmlinuz", "live/initrd.img"}); err != nil {
		t.Fatalf("file set: %v", err)
	}

	t.Run("untrusted key", func(t *testing.T) {
		_, err := Verify(body, sig, []minisign.PublicKey{other})
		if !errors.Is(err, ErrUntrustedKey) || !strings.Contains(err.Error(), KeyID(pub.ID())) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tampered manifest", func(t *testing.T) {
		bad := bytes.Replace(body, []byte(`"quiet"`), []byte(`"init=/bin/sh"`), 1)
		if _, err := Verify(bad, sig, []minisign.PublicKey{pub}); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tampered trusted comment", func(t *testing.T) {
		bad := bytes.Replace(sig, []byte("version=12.7"), []byte("version=12.8"), 1)
		if _, err := Verify(body, bad, []minisign.PublicKey{pub}); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("comment of another manifest", func(t *testing.T) {
		// A valid signature whose trusted comment names another version
		// (signed by the right key) is refused: the comment must
		// describe the body.
		m2 := *m
		m2.Version = "12.6"
		body2, _ := Encode(&m2)
		sig2 := minisign.SignWithComments(priv, body2, TrustedComment(m), "x")
		if _, err := Verify(body2, sig2, []minisign.PublicKey{pub}); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "does not describe") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tampered file", func(t *testing.T) {
		os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel bytez"), 0o644)
		defer os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel bytes"), 0o644)
		err := v.CheckFiles(dir, nil)
		var fm *FileMismatch
		if !errors.As(err, &fm) || fm.File != "vmlinuz" || fm.Expected != v.Files[1].SHA256 || fm.Got == fm.Expected {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("extra file", func(t *testing.T) {
		if err := v.CheckFileSet([]string{"vmlinuz", "live/initrd.img", "evil"}); !errors.Is(err, ErrMismatch) {
			t.Fatalf("got %v", err)
		}
		if err := v.CheckFileSet([]string{"vmlinuz"}); !errors.Is(err, ErrMismatch) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		for _, s := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("a"), MaxSigBytes+1)} {
			if _, err := Verify(body, s, []minisign.PublicKey{pub}); err == nil {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

// TestMinisignCLI checks interop with Debian's minisign both ways: a
// manifest signed here verifies with `minisign -V` (trusted comment
// shown), and one signed by `minisign -S` with a key from `minisign -G`
// verifies here, through ReadSecretKey with and without a password.
func TestMinisignCLI(t *testing.T) {
	if _, err := exec.LookPath("minisign"); err != nil {
		t.Skip("needs Debian's minisign (apt install minisign)")
	}
	dir := t.TempDir()
	m := testManifest(t, dir)
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("minisign", args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("minisign %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pubPath, secPath := filepath.Join(dir, "k.pub"), filepath.Join(dir, "k.key")
	run("", "-G", "-W", "-p", pubPath, "-s", secPath)
	sec, err := ReadSecretKey(secPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, sig, err := Sign(sec, m)
	if err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, FileName)
	os.WriteFile(mp, body, 0o644)
	os.WriteFile(mp+".minisig", sig, 0o644)
	out := run("", "-V", "-p", pubPath, "-m", mp)
	if !strings.Contains(out, "Signature and comment signature verified") || !strings.Contains(out, TrustedComment(m)) {
		t.Fatalf("minisign -V: %s", out)
	}

	// The other way: minisign signs (prehashed by default) with an
	// encrypted key; we verify with its public key file.
	pub2, sec2 := filepath.Join(dir, "e.pub"), filepath.Join(dir, "e.key")
	run("pw\npw\n", "-G", "-p", pub2, "-s", sec2)
	run("pw\n", "-S", "-s", sec2, "-m", mp, "-t", TrustedComment(m))
	pubText, _ := os.ReadFile(pub2)
	pk, err := ParseKey(pubText)
	if err != nil {
		t.Fatal(err)
	}
	sigCLI, _ := os.ReadFile(mp + ".minisig")
	v, err := Verify(body, sigCLI, []minisign.PublicKey{pk})
	if err != nil {
		t.Fatalf("verify minisign -S signature: %v", err)
	}
	if v.KeyID != KeyID(pk.ID()) {
		t.Fatalf("key id %s", v.KeyID)
	}
	// The encrypted key works for signing here too, with its password.
	if _, err := ReadSecretKey(sec2, nil); !errors.Is(err, ErrNeedPassword) {
		t.Fatalf("no password: %v", err)
	}
	if _, err := ReadSecretKey(sec2, func() (string, error) { return "wrong", nil }); err == nil {
		t.Fatal("wrong password accepted")
	}
	k2, err := ReadSecretKey(sec2, func() (string, error) { return "pw", nil })
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID() != pk.ID() {
		t.Fatal("decrypted key has another id")
	}
}
