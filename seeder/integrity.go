package seeder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// watchEvery is how often the files of every ready OS are stat'ed to
// notice a change made on disk after they were verified. Requests for an
// OS's .torrent, and every web seed request, check at once as well.
const watchEvery = time.Second

// integrity watches an OS's files after "OS ready". The seeder tells the
// BitTorrent library every piece is complete and the web seed serves the
// files' bytes as they are, so a file changed on disk would be served as
// good: clients fail the piece hashes, ban the server and never finish.
// Reading every piece for upload twice would cost a hash per chunk sent;
// a stat per file per second costs microseconds. So a change of size,
// modification time or inode stops serving the OS (its torrent is dropped
// from the client, the web seed refuses its files, the OS list says why),
// and the OS is verified again against its torrent: it is served again
// when its files match (restored, or only touched), and stays unavailable
// while they do not. A change that keeps size, mtime and inode (bit rot)
// is found at the next start, which verifies every piece.
type integrity struct {
	keys      []fileKey // as of the last verification
	infoBytes []byte
	pieceLen  int64
	pieces    []byte
	problem   string // why the OS is not served now; "" when it is
	checking  bool
}

// watchState is the seeder's part for integrity: one watcher goroutine,
// and the context of its checks, which Close cancels.
type watchState struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

// watchOS starts watching st, whose files were verified as keys.
func (s *Seeder) watchOS(st *osState, keys []fileKey, infoBytes []byte, info *metainfo.Info) {
	s.mu.Lock()
	st.integrity = &integrity{keys: keys, infoBytes: infoBytes, pieceLen: info.PieceLength, pieces: info.Pieces}
	s.mu.Unlock()
	s.watch.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.watch.ctx, s.watch.cancel = ctx, cancel
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tick := time.NewTicker(watchEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for _, st := range s.oses {
					s.checkOS(ctx, st)
				}
			}
		}()
	})
}

// stopWatching ends the watcher and any verification (Close).
func (s *Seeder) stopWatching() {
	s.watch.once.Do(func() {}) // no watcher may start after this
	if s.watch.cancel != nil {
		s.watch.cancel()
	}
}

// osProblem is why st is not served now ("" when it is).
func (s *Seeder) osProblem(st *osState) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.integrity == nil {
		return ""
	}
	return st.integrity.problem
}

// checkOS stats st's files; on a change it stops serving st and
// verifies it again in the background. It returns why st is not served
// ("" when it is).
func (s *Seeder) checkOS(ctx context.Context, st *osState) string {
	s.mu.Lock()
	in := st.integrity
	if in == nil || in.checking || s.closed {
		defer s.mu.Unlock()
		if in == nil {
			return ""
		}
		return in.problem
	}
	keys := in.keys
	s.mu.Unlock()
	now, err := statKeys(st.os)
	changed := changedFiles(keys, now)
	if err == nil && len(changed) == 0 {
		return s.osProblem(st)
	}
	if err != nil && len(changed) == 0 {
		changed = []string{err.Error()}
	}
	s.mu.Lock()
	if in.checking || s.closed {
		defer s.mu.Unlock()
		return in.problem
	}
	in.checking = true
	wasServed := in.problem == ""
	in.problem = fmt.Sprintf("files changed on disk since they were verified (%s); verifying them again", joinNames(changed))
	t := st.t
	st.t = nil
	s.mu.Unlock()
	if wasServed {
		s.log.Warn("OS files changed on disk: not serving the OS until they match its torrent again",
			"os", st.os.Name, "files", joinNames(changed))
	}
	s.web.Remove(st.os.Name)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Dropped here, not by the caller: a piece read may hold
		// the library's lock.
		if t != nil {
			t.Drop()
		}
		s.reverify(ctx, st)
	}()
	return s.osProblem(st)
}

// changedFiles names the files whose key differs between was and now.
func changedFiles(was, now []fileKey) []string {
	var out []string
	for i, k := range was {
		if i >= len(now) || now[i] != k {
			out = append(out, k.Path)
		}
	}
	return out
}

// reverify hashes st's files against its torrent and serves it again if
// they match.
func (s *Seeder) reverify(ctx context.Context, st *osState) {
	s.mu.Lock()
	in := st.integrity
	pl, want, infoBytes := in.pieceLen, in.pieces, in.infoBytes
	s.mu.Unlock()
	keys, err := statKeys(st.os)
	if err == nil {
		var d *dataSet
		if d, err = openData(st.os.Dir, st.os.Files); err == nil {
			err = verifyPieces(ctx, st.os.Name, d, pl, want, max(1, runtime.GOMAXPROCS(0)/2), nil)
			d.Close()
		}
	}
	if err == nil {
		err = s.reserve(ctx, st, infoBytes)
	}
	s.mu.Lock()
	in.checking = false
	if keys != nil {
		// A file that changes again after this stat is caught by
		// the next check.
		in.keys = keys
	}
	if err == nil {
		in.problem = ""
	} else {
		in.problem = "damaged: " + err.Error()
	}
	s.mu.Unlock()
	var ce *CorruptError
	switch {
	case err == nil:
		s.log.Info("OS files match its torrent again: serving the OS", "os", st.os.Name)
	case errors.As(err, &ce):
		s.log.Error("OS files do not match its torrent: not serving the OS until they are restored", "os", st.os.Name,
			"files", joinNames(ce.Files), "bad_pieces", ce.Pieces, "pieces", ce.Total)
	case ctx.Err() == nil:
		s.log.Error("OS files cannot be verified: not serving the OS", "os", st.os.Name, "err", err)
	}
}

// reserve serves a verified OS again: its torrent in the client and its
// folder in the web seed.
func (s *Seeder) reserve(ctx context.Context, st *osState, infoBytes []byte) error {
	s.mu.Lock()
	cl := s.client
	s.mu.Unlock()
	if cl != nil {
		t, err := s.seed(ctx, cl, st.os, metainfo.HashBytes(infoBytes), infoBytes)
		if err != nil {
			return err
		}
		s.mu.Lock()
		st.t = t
		s.mu.Unlock()
	}
	if !s.opts.NoWebSeed {
		return s.web.Add(st.os.Name, st.os.Dir, st.os.Files)
	}
	return nil
}

// webSeedCheck is the web seed's check of an opened file: a file that is
// not as it was verified stops the OS at once, before any byte is sent.
func (s *Seeder) webSeedCheck(osName, file string, fi os.FileInfo) error {
	s.mu.Lock()
	st := s.byName[osName]
	var want *fileKey
	if st != nil && st.integrity != nil {
		for i := range st.integrity.keys {
			if st.integrity.keys[i].Path == file {
				k := st.integrity.keys[i]
				want = &k
			}
		}
	}
	s.mu.Unlock()
	if st == nil || want == nil {
		return nil
	}
	got := fileKey{Path: file, Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		got.Inode, got.Dev = sys.Ino, uint64(sys.Dev)
	}
	if got != *want && s.watch.ctx != nil {
		s.checkOS(s.watch.ctx, st)
	}
	if p := s.osProblem(st); p != "" {
		return fmt.Errorf("OS %s is not served: %s", osName, p)
	}
	return nil
}

// checkedStorage wraps an OS's file storage so that every piece read for
// upload first checks (one stat per file the piece spans, about a
// microsecond) that those files are as they were verified: a piece is
// never read from a file changed since, and the change stops the OS at
// once instead of at the next watchEvery.
func (s *Seeder) checkedStorage(st *osState, inner storage.ClientImplCloser) storage.ClientImplCloser {
	return &checkedClient{ClientImplCloser: inner, s: s, st: st}
}

type checkedClient struct {
	storage.ClientImplCloser
	s  *Seeder
	st *osState
}

func (c *checkedClient) OpenTorrent(ctx context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	t, err := c.ClientImplCloser.OpenTorrent(ctx, info, ih)
	if err != nil || t.Piece == nil {
		return t, err
	}
	piece, pl := t.Piece, info.PieceLength
	t.Piece = func(p metainfo.Piece) storage.PieceImpl {
		return &checkedPiece{PieceImpl: piece(p), s: c.s, st: c.st, from: int64(p.Index()) * pl, to: int64(p.Index())*pl + p.Length()}
	}
	return t, nil
}

type checkedPiece struct {
	storage.PieceImpl
	s        *Seeder
	st       *osState
	from, to int64 // the piece's bytes in the torrent's concatenated files
}

func (p *checkedPiece) ReadAt(b []byte, off int64) (int, error) {
	if err := p.s.checkSpan(p.st, p.from, p.to); err != nil {
		return 0, err
	}
	return p.PieceImpl.ReadAt(b, off)
}

// checkSpan stats the files that bytes [from, to) of st lie in and stops
// st if one changed. It returns an error while st is not served.
func (s *Seeder) checkSpan(st *osState, from, to int64) error {
	s.mu.Lock()
	in := st.integrity
	if in == nil {
		s.mu.Unlock()
		return nil
	}
	problem := in.problem
	var want []fileKey
	var off int64
	for _, k := range in.keys {
		if off < to && off+k.Size > from {
			want = append(want, k)
		}
		off += k.Size
	}
	s.mu.Unlock()
	if problem != "" {
		return fmt.Errorf("OS %s is not served: %s", st.os.Name, problem)
	}
	for _, k := range want {
		fi, err := os.Stat(filepath.Join(st.os.Dir, filepath.FromSlash(k.Path)))
		got := fileKey{Path: k.Path}
		if err == nil {
			got.Size, got.MtimeNS = fi.Size(), fi.ModTime().UnixNano()
			if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
				got.Inode, got.Dev = sys.Ino, uint64(sys.Dev)
			}
		}
		if got != k && s.watch.ctx != nil {
			if p := s.checkOS(s.watch.ctx, st); p != "" {
				return fmt.Errorf("OS %s is not served: %s", st.os.Name, p)
			}
		}
	}
	return nil
}
