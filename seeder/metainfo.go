package seeder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/oss"
)

// Where generated files live, under the project's out/ folder.
const (
	torrentsDir = "torrents"     // out/torrents/<name>.torrent, for people and other tools
	cacheDir    = "cache/seeder" // out/cache/seeder/<name>.json: what the hash was computed from
	cacheFormat = 1
)

// fileKey identifies one file's content as far as the file system can tell
// without reading it. A change of any field means the file was rewritten.
type fileKey struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
	Dev     uint64 `json:"dev"`
}

// cacheEntry is out/cache/seeder/<name>.json.
type cacheEntry struct {
	Format      int       `json:"format"`
	Name        string    `json:"name"`
	PieceLength int64     `json:"piece_length"`
	Files       []fileKey `json:"files"`
	InfoHash    string    `json:"info_hash"`
	// Info is the bencoded info dictionary (its SHA-1 is InfoHash).
	Info      []byte    `json:"info"`
	HashedAt  time.Time `json:"hashed_at"`
	HashSecs  float64   `json:"hash_seconds"`
	TotalSize int64     `json:"total_size"`
}

func statKeys(o *oss.OS) ([]fileKey, error) {
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	keys := make([]fileKey, 0, len(o.Files))
	for _, f := range o.Files {
		fi, err := root.Stat(filepath.FromSlash(f))
		if err != nil {
			return nil, err
		}
		k := fileKey{Path: f, Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k.Inode, k.Dev = st.Ino, uint64(st.Dev)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func cachePath(p *config.Project, name string) string {
	return filepath.Join(p.OutDir(), cacheDir, name+".json")
}

// TorrentPath is where the .torrent of an OS is written.
func TorrentPath(p *config.Project, name string) string {
	return filepath.Join(p.OutDir(), torrentsDir, name+".torrent")
}

// loadCache returns the cache entry of o when it still describes the files
// on disk (same paths, sizes, modification times and inodes).
func loadCache(p *config.Project, o *oss.OS) (*cacheEntry, []fileKey, error) {
	keys, err := statKeys(o)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(cachePath(p, o.Name))
	if err != nil {
		return nil, keys, nil
	}
	var c cacheEntry
	if json.Unmarshal(b, &c) != nil || c.Format != cacheFormat || c.Name != o.Name || !slices.Equal(c.Files, keys) {
		return nil, keys, nil
	}
	var total int64
	for _, k := range keys {
		total += k.Size
	}
	if c.PieceLength != pieceLength(total) || metainfo.HashBytes(c.Info).HexString() != c.InfoHash {
		return nil, keys, nil
	}
	return &c, keys, nil
}

// CachedInfo returns the hex info hash of each OS of the project whose hash
// cache is fresh (files unchanged since they were hashed), without reading
// the images. `boottorrent check` shows it; OSes missing from the map will
// be hashed at the next start.
func CachedInfo(p *config.Project) map[string]string {
	out := map[string]string{}
	for _, o := range p.OSes {
		if c, _, err := loadCache(p, o); err == nil && c != nil {
			out[o.Name] = c.InfoHash
		}
	}
	return out
}

// buildInfo hashes the OS's files (all cores) and returns the info
// dictionary: multi-file, named after the OS folder (BEP 19 web seed paths
// are url-list + name + "/" + path), private (BEP 27: no DHT, no PEX, no
// public peers).
func buildInfo(ctx context.Context, o *oss.OS, d *dataSet, workers int, done *atomic.Int64) (metainfo.Info, error) {
	pl := pieceLength(d.total)
	pieces, err := hashPiecesProgress(ctx, d, pl, workers, done)
	if err != nil {
		return metainfo.Info{}, err
	}
	private := true
	info := metainfo.Info{Name: o.Name, PieceLength: pl, Pieces: pieces, Private: &private}
	for _, s := range d.spans {
		info.Files = append(info.Files, metainfo.FileInfo{Length: s.size, Path: splitSlash(s.rel)})
	}
	return info, nil
}

func splitSlash(p string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

func saveCache(p *config.Project, c *cacheEntry) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return oss.WriteFileAtomic(cachePath(p, c.Name), b)
}

// metaInfoBytes renders the .torrent of an OS around its info dictionary.
// announce and url-list are not part of the info hash, so they follow the
// current settings without re-hashing.
func metaInfoBytes(infoBytes []byte, announce [][]string, webSeed string) ([]byte, metainfo.MetaInfo, error) {
	mi := metainfo.MetaInfo{
		InfoBytes:    infoBytes,
		CreatedBy:    "boottorrent",
		CreationDate: time.Now().Unix(),
		UrlList:      []string{webSeed},
	}
	if len(announce) > 0 && len(announce[0]) > 0 {
		mi.Announce = announce[0][0]
		mi.AnnounceList = announce
	}
	var buf bytes.Buffer
	if err := mi.Write(&buf); err != nil {
		return nil, mi, err
	}
	return buf.Bytes(), mi, nil
}

func encodeInfo(info metainfo.Info) ([]byte, error) {
	b, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode info: %w", err)
	}
	return b, nil
}

func decodeInfo(b []byte, info *metainfo.Info) error {
	if err := bencode.Unmarshal(b, info); err != nil {
		return fmt.Errorf("decode cached info: %w", err)
	}
	return nil
}

// infoFor returns the OS's bencoded info dictionary: the cached one after
// every piece was verified against the files (cached non-nil), else a new
// one hashed from the files and cached. how says which.
func infoFor(ctx context.Context, p *config.Project, o *oss.OS, d *dataSet, cached *cacheEntry, keys []fileKey, workers int, done *atomic.Int64, start time.Time) ([]byte, string, error) {
	if cached != nil {
		var info metainfo.Info
		if err := decodeInfo(cached.Info, &info); err == nil {
			if err := verifyPieces(ctx, o.Name, d, info.PieceLength, info.Pieces, workers, done); err != nil {
				return nil, "", err
			}
			return cached.Info, "verified", nil
		}
	}
	info, err := buildInfo(ctx, o, d, workers, done)
	if err != nil {
		return nil, "", fmt.Errorf("OS %s: hash: %w", o.Name, err)
	}
	infoBytes, err := encodeInfo(info)
	if err != nil {
		return nil, "", err
	}
	// The files may have changed while we read them; the cache is keyed
	// by what we saw before, which is then stale and makes the next start
	// hash again.
	c := &cacheEntry{Format: cacheFormat, Name: o.Name, PieceLength: info.PieceLength, Files: keys,
		InfoHash: metainfo.HashBytes(infoBytes).HexString(), Info: infoBytes, HashedAt: time.Now().UTC(),
		HashSecs: time.Since(start).Seconds(), TotalSize: d.total}
	if err := saveCache(p, c); err != nil {
		return infoBytes, "hashed", fmt.Errorf("%w: %w", errCacheNotWritten, err)
	}
	return infoBytes, "hashed", nil
}

// errCacheNotWritten is a warning: the info is good, the next start hashes
// again.
var errCacheNotWritten = errors.New("hash cache not written")

// InfoHashes reads an OS the way Start does (verifying the cached piece
// hashes, or hashing and caching) and returns the info hash of the
// torrent the appliance serves (private) and of the public one `publish`
// writes (the same pieces, not private). `boottorrent sign` uses it, so
// the hash it signs is the seeder's.
func InfoHashes(ctx context.Context, p *config.Project, o *oss.OS, workers int) (private, public metainfo.Hash, err error) {
	infoBytes, err := ReadInfo(ctx, p, o, workers)
	if err != nil {
		return private, public, err
	}
	private = metainfo.HashBytes(infoBytes)
	pub, err := PublicInfo(infoBytes)
	if err != nil {
		return private, public, err
	}
	return private, metainfo.HashBytes(pub), nil
}

// ReadInfo returns the bencoded private info dictionary of an OS, as
// Start computes it.
func ReadInfo(ctx context.Context, p *config.Project, o *oss.OS, workers int) ([]byte, error) {
	cached, keys, err := loadCache(p, o)
	if err != nil {
		return nil, fmt.Errorf("OS %s: %w", o.Name, err)
	}
	d, err := openData(o.Dir, o.Files)
	if err != nil {
		return nil, fmt.Errorf("OS %s: %w", o.Name, err)
	}
	defer d.Close()
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var done atomic.Int64
	infoBytes, _, err := infoFor(ctx, p, o, d, cached, keys, workers, &done, time.Now())
	if errors.Is(err, errCacheNotWritten) {
		err = nil
	}
	return infoBytes, err
}

// PublicInfo is the info dictionary without the private flag: the
// torrent another site seeds in public swarms (BEP 27 private torrents
// may only use the tracker named in them).
func PublicInfo(infoBytes []byte) ([]byte, error) {
	var info metainfo.Info
	if err := decodeInfo(infoBytes, &info); err != nil {
		return nil, err
	}
	info.Private = nil
	return encodeInfo(info)
}
