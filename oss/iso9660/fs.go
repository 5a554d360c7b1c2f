package iso9660

import (
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// FS returns the image as a read-only fs.FS. Open and Stat follow symbolic
// links inside the image (a link leading out fails with ErrEscape);
// ReadDir lists links as links. Times are not kept: every file reports the
// zero time.
func (im *Image) FS() fs.FS { return imageFS{im} }

type imageFS struct{ im *Image }

var (
	_ fs.ReadDirFS = imageFS{}
	_ fs.StatFS    = imageFS{}
)

func (f imageFS) Open(name string) (fs.File, error) {
	e, err := f.im.lookup(name, true)
	if err != nil {
		return nil, err
	}
	if e.Mode&^fs.ModePerm != 0 && !e.IsDir() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a regular file or directory")}
	}
	return &file{im: f.im, e: e, r: f.im.reader(e)}, nil
}

func (f imageFS) Stat(name string) (fs.FileInfo, error) {
	e, err := f.im.lookup(name, true)
	if err != nil {
		return nil, err
	}
	return info{e}, nil
}

func (f imageFS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := f.im.lookup(name, true)
	if err != nil {
		return nil, err
	}
	if !e.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	kids, err := f.im.readDir(e)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, len(kids))
	for i, k := range kids {
		out[i] = fs.FileInfoToDirEntry(info{k})
	}
	sortEntries(out)
	return out, nil
}

type info struct{ e *Entry }

func (i info) Name() string       { return i.e.Name }
func (i info) Size() int64        { return i.e.Size }
func (i info) Mode() fs.FileMode  { return i.e.Mode }
func (i info) ModTime() time.Time { return time.Time{} }
func (i info) IsDir() bool        { return i.e.IsDir() }
func (i info) Sys() any           { return nil }

type file struct {
	im  *Image
	e   *Entry
	r   io.Reader
	dir []fs.DirEntry
	pos int
}

func (f *file) Stat() (fs.FileInfo, error) { return info{f.e}, nil }
func (f *file) Close() error               { return nil }

func (f *file) Read(b []byte) (int, error) {
	if f.e.IsDir() {
		return 0, &fs.PathError{Op: "read", Path: f.e.Name, Err: errors.New("is a directory")}
	}
	return f.r.Read(b)
}

func (f *file) ReadDir(n int) ([]fs.DirEntry, error) {
	if !f.e.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: f.e.Name, Err: errors.New("not a directory")}
	}
	if f.dir == nil {
		kids, err := f.im.readDir(f.e)
		if err != nil {
			return nil, err
		}
		f.dir = make([]fs.DirEntry, len(kids))
		for i, k := range kids {
			f.dir[i] = fs.FileInfoToDirEntry(info{k})
		}
		sortEntries(f.dir)
	}
	rest := f.dir[f.pos:]
	if n <= 0 {
		f.pos = len(f.dir)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	f.pos += len(rest)
	return rest, nil
}

func sortEntries(d []fs.DirEntry) {
	slices.SortFunc(d, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
}
