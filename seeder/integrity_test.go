package seeder

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// TestChangedFileIsNotServed: one byte of an OS image changed on disk
// after "OS ready" is served by neither the seeder nor the web seed
// (aria2c in a namespace, holding the torrent fetched before the change,
// gets no piece that fails its hash check), the log names the OS and the
// file, /api/v1/oss says the OS is not served; with the byte restored
// the OS is served again and aria2c downloads it whole.
func TestChangedFileIsNotServed(t *testing.T) {
	needTools(t, map[string]string{"aria2c": "aria2"})
	e := newLANEnv(t, 1, testOS{"alpha", map[string]int64{"vmlinuz": 1 << 20, "initrd.img": 3 << 20}})
	e.start(t, Options{})
	cli := e.clients[0]
	c := cli.HTTPClient(10 * time.Second)
	base := "http://" + lanServer + ":8080"
	get := func(path string) (int, []byte) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		return resp.StatusCode, b
	}
	dir := t.TempDir()
	code, tor := get(bootapi.PathTorrents + "alpha.torrent")
	if code != 200 {
		t.Fatalf("torrent: %d", code)
	}
	torFile := filepath.Join(dir, "alpha.torrent")
	os.WriteFile(torFile, tor, 0o644)

	path := filepath.Join(e.p.OS("alpha").Dir, "initrd.img")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	orig := make([]byte, 1)
	f.ReadAt(orig, 2<<20+7)
	f.WriteAt([]byte{orig[0] ^ 0xff}, 2<<20+7)
	f.Close()

	// At once, before the watcher's next tick: the web seed and the
	// BitTorrent side find the change themselves.
	if code, _ := get(bootapi.PathWebSeed + "alpha/initrd.img"); code == 200 {
		t.Error("the web seed served the changed file")
	}
	out := filepath.Join(dir, "bad")
	os.MkdirAll(out, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	args := append(aria2Args(out, "0", torFile), "--bt-stop-timeout=15")
	ariaOut, err := cli.Command(ctx, "aria2c", args...).CombinedOutput()
	cancel()
	if err == nil {
		t.Errorf("aria2c finished the changed OS:\n%s", ariaOut)
	}
	log, err := os.ReadFile(filepath.Join(out, "aria2.log"))
	if err != nil || !strings.Contains(string(log), "alpha") {
		t.Fatalf("aria2c did not run: %v\n%s", err, ariaOut)
	}
	if n := strings.Count(strings.ToLower(string(log)), "validation failed"); n > 0 {
		t.Errorf("aria2c received %d pieces that failed their hash check", n)
	}
	if got, err := os.ReadFile(filepath.Join(out, "alpha", "initrd.img")); err == nil && len(got) > 2<<20+7 && got[2<<20+7] != orig[0] {
		t.Error("aria2c holds the changed byte")
	}
	if len(e.rec.find("OS files changed on disk: not serving the OS until they match its torrent again", "os", "alpha")) == 0 {
		t.Error("no log line naming the OS whose files changed")
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(e.rec.find("OS files do not match its torrent: not serving the OS until they are restored", "files", "initrd.img")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no log line naming the damaged file")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var oses []bootapi.OS
	_, b := get(bootapi.PathOSList)
	json.Unmarshal(b, &oses)
	if len(oses) != 1 || oses[0].Problem == "" || oses[0].InfoHash != "" {
		t.Errorf("os list while damaged: %s", b)
	}
	if code, _ := get(bootapi.PathTorrents + "alpha.torrent"); code != http.StatusServiceUnavailable {
		t.Errorf("torrent while damaged: %d, want 503", code)
	}

	// Restored: served again.
	f, _ = os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt(orig, 2<<20+7)
	f.Close()
	deadline = time.Now().Add(20 * time.Second)
	for len(e.rec.find("OS files match its torrent again: serving the OS", "os", "alpha")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the restored OS is not served again")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, b = get(bootapi.PathOSList)
	oses = nil
	json.Unmarshal(b, &oses)
	if len(oses) != 1 || oses[0].Problem != "" || oses[0].InfoHash == "" {
		t.Errorf("os list after the restore: %s", b)
	}
	good := filepath.Join(dir, "good")
	os.MkdirAll(good, 0o755)
	runAria2(t, cli, good, "0", base+bootapi.PathTorrents+"alpha.torrent")
	e.checkDownload(t, good, "alpha")
}

// BenchmarkCheckSpan is the cost a piece read for upload pays for the
// integrity check (one stat), next to reading one 16 KiB chunk.
func BenchmarkCheckSpan(b *testing.B) {
	p := makeProject(b, "127.0.0.1", 8080, testOS{"alpha", map[string]int64{"vmlinuz": 1 << 20, "initrd.img": 1 << 20}})
	s, _, err := startSeeder(b, p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	st := s.byName["alpha"]
	b.Run("stat", func(b *testing.B) {
		for b.Loop() {
			if err := s.checkSpan(st, 1<<20+5, 1<<20+6); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read16k", func(b *testing.B) {
		f, _ := os.Open(filepath.Join(p.OS("alpha").Dir, "initrd.img"))
		defer f.Close()
		buf := make([]byte, 16<<10)
		for b.Loop() {
			f.ReadAt(buf, 4096)
		}
	})
}
