package client

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// ramStore is the client's torrent storage: plain files (in init mode on
// a tmpfs, so in RAM) written with pwrite and read with pread, and the
// piece completion kept in memory. The library's file storage (v1.62,
// storage/file-io-mmap.go, its default) maps each file with a writable
// shared mapping it keeps while the torrent lives: the files stay open for
// writing, kexec_file_load then refuses the kernel (ETXTBSY), and deleting
// the files would not free their RAM. Here Close really closes every file.
type ramStore struct {
	dir string
	// combine, when set, lays the torrent's initrd and the files it hands
	// to the OS out inside one combined initrd (handover.go).
	combine func(dir string, info *metainfo.Info) (*handover, error)
	mu      sync.Mutex
	ts      []*ramTorrent
}

func newRAMStore(dir string) *ramStore { return &ramStore{dir: dir} }

type ramFile struct {
	f        *os.File
	off, len int64 // in the torrent
	at       int64 // where the file starts in f
}

type ramTorrent struct {
	files []ramFile
	mu    sync.Mutex
	done  []bool
}

func (s *ramStore) OpenTorrent(_ context.Context, info *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	t := &ramTorrent{done: make([]bool, info.NumPieces())}
	var off int64
	var h *handover
	if s.combine != nil {
		var err error
		if h, err = s.combine(filepath.Join(s.dir, info.BestName()), info); err != nil {
			return storage.TorrentImpl{}, err
		}
		t.files = append(t.files, ramFile{f: h.f}) // closed with the others
	}
	for _, fi := range info.UpvertedFiles() {
		if h != nil {
			if at, ok := h.place[strings.Join(fi.BestPath(), "/")]; ok {
				t.files = append(t.files, ramFile{f: h.f, off: off, len: fi.Length, at: at})
				off += fi.Length
				continue
			}
		}
		p := filepath.Join(s.dir, info.BestName())
		if info.IsDir() {
			p = filepath.Join(append([]string{p}, fi.BestPath()...)...)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.close()
			return storage.TorrentImpl{}, err
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err == nil {
			err = f.Truncate(fi.Length)
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			t.close()
			return storage.TorrentImpl{}, err
		}
		t.files = append(t.files, ramFile{f: f, off: off, len: fi.Length})
		off += fi.Length
	}
	s.mu.Lock()
	s.ts = append(s.ts, t)
	s.mu.Unlock()
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl { return &ramPiece{t: t, p: p} },
		Close: t.close,
	}, nil
}

// Close closes every file of every torrent.
func (s *ramStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, t := range s.ts {
		errs = append(errs, t.close())
	}
	s.ts = nil
	return errors.Join(errs...)
}

func (t *ramTorrent) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, f := range t.files {
		if err := f.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// io reads or writes b at the torrent offset off, across file ends.
func (t *ramTorrent) io(b []byte, off int64, write bool) (int, error) {
	n := 0
	for _, f := range t.files {
		if len(b) == 0 {
			break
		}
		if f.len == 0 || off >= f.off+f.len {
			continue
		}
		rel := off - f.off
		k := min(int64(len(b)), f.len-rel)
		var m int
		var err error
		if write {
			m, err = f.f.WriteAt(b[:k], f.at+rel)
		} else {
			m, err = f.f.ReadAt(b[:k], f.at+rel)
		}
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
		off += k
	}
	if len(b) > 0 {
		return n, io.EOF
	}
	return n, nil
}

type ramPiece struct {
	t *ramTorrent
	p metainfo.Piece
}

func (p *ramPiece) bound(b []byte, off int64) ([]byte, bool) {
	if off < 0 || off >= p.p.Length() {
		return nil, false
	}
	if rest := p.p.Length() - off; int64(len(b)) > rest {
		return b[:rest], false
	}
	return b, true
}

func (p *ramPiece) ReadAt(b []byte, off int64) (int, error) {
	bb, whole := p.bound(b, off)
	n, err := p.t.io(bb, p.p.Offset()+off, false)
	if err == nil && !whole {
		err = io.EOF
	}
	return n, err
}

func (p *ramPiece) WriteAt(b []byte, off int64) (int, error) {
	bb, whole := p.bound(b, off)
	n, err := p.t.io(bb, p.p.Offset()+off, true)
	if err == nil && !whole {
		err = io.ErrShortWrite
	}
	return n, err
}

func (p *ramPiece) set(v bool) error {
	p.t.mu.Lock()
	p.t.done[p.p.Index()] = v
	p.t.mu.Unlock()
	return nil
}

func (p *ramPiece) MarkComplete() error    { return p.set(true) }
func (p *ramPiece) MarkNotComplete() error { return p.set(false) }

func (p *ramPiece) Completion() storage.Completion {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	return storage.Completion{Ok: true, Complete: p.t.done[p.p.Index()]}
}
