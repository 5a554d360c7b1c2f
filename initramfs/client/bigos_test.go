package client

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// TestSwarmSharesLargeOS: two machines splitting the seeder's pieces of
// an OS over the library's 64 MiB request window (MaxUnverifiedBytes)
// both get their share from the seeder and the rest from each other.
// With the window, each machine's share lay past it and both waited
// for the web seed (2026-12-08, a 140 MiB Debian live system).
func TestSwarmSharesLargeOS(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2 × 96 MiB (-short)")
	}
	s := newTestServer(t, 1<<20, false)
	osDir := filepath.Join(s.dir, s.osName)
	big := make([]byte, 96<<20)
	rand.Read(big)
	s.files["filesystem.squashfs"] = big
	if err := os.WriteFile(filepath.Join(osDir, "filesystem.squashfs"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 128 << 10}
	if err := info.BuildFromFilePath(osDir); err != nil {
		t.Fatal(err)
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	s.mi = &metainfo.MetaInfo{InfoBytes: ib}
	o := &s.boot.Menu[0]
	o.InfoHash, o.Size = s.mi.HashInfoBytes().HexString(), info.TotalLength()
	o.Files = append(o.Files, "filesystem.squashfs")
	s.uploadBps = 16 << 20
	s.shares = 2
	s.startSeeder()
	results, errs := runClients(t, s, 2, "52:54:00:00:03:%02x")
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		t.Logf("client %d: %.2fs, peers %d seeder %d web %d", i, r.DownloadSeconds, r.FromPeers, r.FromSeeder, r.FromWeb)
		if r.FromSeeder < o.Size/4 || r.FromPeers < o.Size/4 {
			t.Errorf("client %d: %d bytes from the seeder and %d from the other machine of %d: want about half each", i, r.FromSeeder, r.FromPeers, o.Size)
		}
	}
}
