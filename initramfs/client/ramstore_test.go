package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
)

// TestRAMStore writes every piece of a multi-file torrent whose pieces
// straddle file ends (and an empty file), reads them back, and checks
// the files on disk and that Close closes them.
func TestRAMStore(t *testing.T) {
	src := t.TempDir()
	files := map[string][]byte{"a": make([]byte, 100_000), "b/c": make([]byte, 70_001), "d": nil, "e": make([]byte, 3)}
	for n, b := range files {
		rand.Read(b)
		os.MkdirAll(filepath.Dir(filepath.Join(src, "os", n)), 0o755)
		os.WriteFile(filepath.Join(src, "os", n), b, 0o644)
	}
	info := metainfo.Info{PieceLength: 32 << 10}
	if err := info.BuildFromFilePath(filepath.Join(src, "os")); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	st := newRAMStore(dst)
	ti, err := st.OpenTorrent(context.Background(), &info, metainfo.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	// The torrent's bytes, in order.
	var all []byte
	for _, f := range info.UpvertedFiles() {
		all = append(all, files[filepath.Join(f.BestPath()...)]...)
	}
	for i := 0; i < info.NumPieces(); i++ {
		p := ti.Piece(info.Piece(i))
		if p.Completion().Complete {
			t.Fatalf("piece %d complete before writing", i)
		}
		mp := info.Piece(i)
		want := all[mp.Offset() : mp.Offset()+mp.Length()]
		// Write in two chunks, the second crossing the piece's end.
		if n, err := p.WriteAt(want[:10], 0); n != 10 || err != nil {
			t.Fatalf("piece %d: write %d %v", i, n, err)
		}
		if n, err := p.WriteAt(append(append([]byte{}, want[10:]...), 0xff), 10); n != len(want)-10 || err == nil {
			t.Fatalf("piece %d: a write past the piece end: %d %v", i, n, err)
		}
		got := make([]byte, len(want)+5)
		n, err := p.ReadAt(got, 0)
		if n != len(want) || err != io.EOF || !bytes.Equal(got[:n], want) {
			t.Fatalf("piece %d: read %d %v", i, n, err)
		}
		p.MarkComplete()
		if !p.Completion().Complete || !p.Completion().Ok {
			t.Fatalf("piece %d not complete", i)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for n, b := range files {
		got, err := os.ReadFile(filepath.Join(dst, "os", n))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s: %v, equal %v", n, err, bytes.Equal(got, b))
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, _ := os.Readlink("/proc/self/fd/" + fd.Name()); len(target) > len(dst) && target[:len(dst)+1] == dst+"/" {
			t.Errorf("fd on %s open after Close", target)
		}
	}
}
