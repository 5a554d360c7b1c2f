package seeder

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
)

// pieceLength returns the piece length for a torrent of size bytes.
//
// Booting machines on a LAN both download and upload at once, and a piece
// can be shared only once it is complete and verified. Small pieces let a
// machine pass data on sooner and give the rarest-first scheduler many
// units to spread among peers; each piece however costs a SHA-1 check, a
// HAVE message to every connected peer and 20 bytes of metainfo. Aiming at
// about 2048 pieces, with 64 KiB as the floor and 4 MiB as the ceiling,
// gives 64 KiB up to 128 MiB images, 256 KiB at 512 MiB, 1 MiB for a 2 GiB
// image (40 KiB of piece hashes, 2048 HAVEs per peer per download) and at
// most 4 MiB (30 ms on gigabit before a piece can be shared) for images of
// many gigabytes. The floor was 256 KiB until the swarm benchmark showed
// that the tail after the server's last byte shrinks with the piece: a
// machine that owns a share of the pieces (initramfs/client/share.go) gets
// each piece at 1/N of the server's uplink, so a 256 KiB piece took 2 s at
// N = 20 and 20 Mbit/s before it could be passed on; 32 MiB, N = 10:
// 1.63× → 1.43× the bound (cmd/swarmbench/TUNING.md). (Libraries default
// to fewer, larger pieces for internet swarms, where the metainfo's size
// and per-piece overhead weigh more than start-up.)
func pieceLength(size int64) int64 {
	const (
		floor  = 64 << 10
		ceil   = 4 << 20
		target = 2048
	)
	pl := int64(floor)
	for pl < ceil && size/pl > target {
		pl *= 2
	}
	return pl
}

// span is one file of a torrent in the concatenated byte stream BitTorrent
// hashes (BEP 3: pieces run across file boundaries).
type span struct {
	rel  string // slash path inside the OS folder
	f    *os.File
	off  int64
	size int64
}

// dataSet is the files of one OS opened for reading, in torrent order.
type dataSet struct {
	spans []span
	total int64
}

// openData opens files (relative slash paths) inside dir through os.Root,
// so a symlink placed in the folder cannot make us hash or serve a file
// outside it.
func openData(dir string, files []string) (*dataSet, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	d := &dataSet{}
	for _, rel := range files {
		f, err := root.Open(filepath.FromSlash(rel))
		if err != nil {
			d.Close()
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			d.Close()
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			d.Close()
			return nil, fmt.Errorf("%s is not a regular file", rel)
		}
		d.spans = append(d.spans, span{rel: rel, f: f, off: d.total, size: fi.Size()})
		d.total += fi.Size()
	}
	return d, nil
}

func (d *dataSet) Close() {
	for _, s := range d.spans {
		s.f.Close()
	}
}

// readAt fills p from the concatenation at off; p must lie inside it.
func (d *dataSet) readAt(p []byte, off int64) error {
	i := sort.Search(len(d.spans), func(i int) bool { return d.spans[i].off+d.spans[i].size > off })
	for len(p) > 0 {
		if i >= len(d.spans) {
			return io.ErrUnexpectedEOF
		}
		s := d.spans[i]
		n := min(int64(len(p)), s.off+s.size-off)
		if n > 0 {
			if _, err := s.f.ReadAt(p[:n], off-s.off); err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("%s: shorter than when it was opened (changed while hashing?)", s.rel)
				}
				return fmt.Errorf("%s: %w", s.rel, err)
			}
		}
		p, off = p[n:], off+n
		i++
	}
	return nil
}

// filesOfPiece names the files piece i of length pl overlaps.
func (d *dataSet) filesOfPiece(i int, pl int64) []string {
	start, end := int64(i)*pl, min(int64(i+1)*pl, d.total)
	var out []string
	for _, s := range d.spans {
		if s.size > 0 && s.off < end && s.off+s.size > start {
			out = append(out, s.rel)
		}
	}
	return out
}

// hashPieces computes the SHA-1 of every piece on workers goroutines (all
// cores when workers <= 0). Workers take piece indexes in order from a
// shared counter, so reads stay close to sequential on disk.
func hashPieces(ctx context.Context, d *dataSet, pl int64, workers int) ([]byte, error) {
	return hashPiecesProgress(ctx, d, pl, workers, nil)
}

// hashPiecesProgress is hashPieces that adds the bytes of every finished
// piece to done (if not nil), for progress logs on large images.
func hashPiecesProgress(ctx context.Context, d *dataSet, pl int64, workers int, done *atomic.Int64) ([]byte, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	n := int((d.total + pl - 1) / pl)
	out := make([]byte, 20*n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(workers, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, pl)
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				start := int64(i) * pl
				b := buf[:min(pl, d.total-start)]
				if err := d.readAt(b, start); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				sum := sha1.Sum(b)
				copy(out[20*i:], sum[:])
				if done != nil {
					done.Add(int64(len(b)))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// CorruptError reports an OS whose files do not match its torrent's piece
// hashes: it is not seeded, since clients would reject (and ban) the
// server for every bad piece.
type CorruptError struct {
	OS     string
	Files  []string // files overlapping a bad piece
	Pieces int      // number of bad pieces
	Total  int
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("OS %s: %d of %d pieces do not match the cached torrent; corrupted or changed without a new modification time: %s (restore the file, or touch it to have it hashed again)",
		e.OS, e.Pieces, e.Total, joinNames(e.Files))
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// ErrCorrupt is the sentinel for a CorruptError.
var ErrCorrupt = errors.New("OS data does not match its torrent")

func joinNames(s []string) string {
	var b bytes.Buffer
	for i, n := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}

// verifyPieces hashes d and compares with want; on mismatch it returns a
// CorruptError naming the files of the bad pieces.
func verifyPieces(ctx context.Context, osName string, d *dataSet, pl int64, want []byte, workers int, done *atomic.Int64) error {
	got, err := hashPiecesProgress(ctx, d, pl, workers, done)
	if err != nil {
		return err
	}
	if len(got) != len(want) {
		return &CorruptError{OS: osName, Files: d.filesOfPiece(0, d.total+1), Pieces: len(want) / 20, Total: len(want) / 20}
	}
	var bad int
	files := map[string]bool{}
	var names []string
	for i := 0; i < len(got)/20; i++ {
		if !bytes.Equal(got[20*i:20*i+20], want[20*i:20*i+20]) {
			bad++
			for _, f := range d.filesOfPiece(i, pl) {
				if !files[f] {
					files[f] = true
					names = append(names, f)
				}
			}
		}
	}
	if bad > 0 {
		return &CorruptError{OS: osName, Files: names, Pieces: bad, Total: len(got) / 20}
	}
	return nil
}
