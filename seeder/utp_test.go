package seeder

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// TestRealClientsSeederOnlyUTP: Debian's qbittorrent-nox (libtorrent,
// uTP and TCP) and aria2c, each in its own namespace, download a torrent
// that has no web seed: every byte comes from the seeder. uTP clients dial
// UDP on the seeder's BitTorrent port, where the UDP tracker listens; the
// tracker answers their SYN with a uTP reset (tracker.utpReset).
// transmission-cli 3.00 with its defaults (uTP on) aborts its own TCP
// fallback and never connects to the seeder; it downloads because the
// seeder dials it back (dialback.go). Before 2026-12-08 it stayed at
// "0 of 0 peers" for the whole run.
func TestRealClientsSeederOnlyUTP(t *testing.T) {
	needTools(t, map[string]string{"aria2c": "aria2", "qbittorrent-nox": "qbittorrent-nox", "transmission-cli": "transmission-cli"})
	e := newLANEnv(t, 3, testOS{"alpha", map[string]int64{"vmlinuz": 3 << 20, "initrd.img": 9<<20 + 4321}})
	e.start(t, Options{NoWebSeed: true})
	url := "http://" + lanServer + ":8080/torrents/alpha.torrent"
	var wg sync.WaitGroup
	wg.Go(func() {
		dir := t.TempDir()
		d := runQBittorrent(t, e.clients[0], dir, url, 60*time.Second, func() bool { return e.downloaded(dir, "alpha") })
		e.checkDownload(t, dir, "alpha")
		t.Logf("qbittorrent-nox: %v", d.Round(time.Millisecond))
	})
	wg.Go(func() {
		dir := t.TempDir()
		d := runAria2(t, e.clients[1], dir, "0", url)
		e.checkDownload(t, dir, "alpha")
		t.Logf("aria2c: %v", d.Round(time.Millisecond))
	})
	wg.Go(func() {
		dir := t.TempDir()
		d := runTransmissionUTP(t, e.clients[2], dir, url, 90*time.Second, true)
		e.checkDownload(t, dir, "alpha")
		t.Logf("transmission-cli (uTP on): %v", d.Round(time.Millisecond))
	})
	wg.Wait()
	st := e.seeder.Stats()["alpha"]
	size := int64(e.p.OS("alpha").Size)
	t.Logf("seeder uploaded %d bytes for 3 × %d", st.Uploaded, size)
	if web := e.seeder.WebSeed().BytesServed(); web != 0 {
		t.Errorf("web seed served %d bytes although the torrent has none", web)
	}
	if st.Uploaded < size {
		t.Errorf("seeder uploaded %d bytes, less than one copy (%d)", st.Uploaded, size)
	}
}

// downloaded says whether every file of OS name under dir/<name>/ has the
// original's size (the content is checked by checkDownload afterwards).
func (e *lanEnv) downloaded(dir, name string) bool {
	o := e.p.OS(name)
	for _, f := range o.Files {
		got, err1 := os.Stat(filepath.Join(dir, name, f))
		want, err2 := os.Stat(filepath.Join(o.Dir, f))
		if err1 != nil || err2 != nil || got.Size() != want.Size() {
			return false
		}
		a, _ := os.ReadFile(filepath.Join(dir, name, f))
		b, _ := os.ReadFile(filepath.Join(o.Dir, f))
		if sha256.Sum256(a) != sha256.Sum256(b) {
			return false
		}
	}
	return true
}

// runQBittorrent downloads a torrent in ns with qbittorrent-nox (libtorrent
// 2, uTP and TCP), driven by its command line alone: a fresh profile with
// the legal notice accepted, DHT, LSD and UPnP off, the WebUI on a local
// port nobody uses. It polls done, then stops the process.
func runQBittorrent(t *testing.T, ns *netns.NS, dir, torrentURL string, limit time.Duration, done func() bool) time.Duration {
	t.Helper()
	// Fetch the .torrent inside the namespace: the file argument is a path.
	resp, err := ns.HTTPClient(10 * time.Second).Get(torrentURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("torrent: %v %s", err, resp.Status)
	}
	tf := filepath.Join(dir, "dl.torrent")
	os.WriteFile(tf, body, 0o644)
	profile := filepath.Join(dir, "profile")
	conf := filepath.Join(profile, "qBittorrent", "config")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "qBittorrent.conf"), []byte(`[LegalNotice]
Accepted=true

[BitTorrent]
Session\DHTEnabled=false
Session\LSDEnabled=false
Session\Port=6881
Session\AddTorrentPaused=false

[Preferences]
Connection\UPnP=false
WebUI\Port=18080
WebUI\LocalHostAuth=false
`), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var out nstest.Buffer
	cmd := ns.Command(ctx, "qbittorrent-nox", "--profile="+profile, "--webui-port=18080",
		"--save-path="+dir, "--add-paused=false", tf)
	cmd.Stdout = &out
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qbittorrent-nox exited: %v\n%s", err, tail(out.String(), 3000))
		case <-ctx.Done():
			logf, _ := os.ReadFile(filepath.Join(profile, "qBittorrent", "data", "logs", "qbittorrent.log"))
			t.Fatalf("qbittorrent-nox did not finish in %v\n%s\n--- log:\n%s", limit, tail(out.String(), 2000), tail(string(logf), 3000))
		case <-tick.C:
			if done() {
				return time.Since(start)
			}
		}
	}
}
