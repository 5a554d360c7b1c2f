package iso9660

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// lookup resolves p (slash-separated, relative to the root) to an entry,
// following symbolic links inside the image; follow says whether a link in
// the last component is followed too.
func (im *Image) lookup(p string, follow bool) (*Entry, error) {
	hops := 0
	for {
		if !fs.ValidPath(p) {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrInvalid}
		}
		parts := strings.Split(p, "/")
		if p == "." {
			return im.root, nil
		}
		if len(parts) > maxDepth {
			return nil, &fs.PathError{Op: "open", Path: p, Err: ErrMalformed}
		}
		cur := im.root
		var restart string
		for i, part := range parts {
			if !cur.IsDir() {
				return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
			}
			kids, err := im.readDir(cur)
			if err != nil {
				return nil, &fs.PathError{Op: "open", Path: path.Join(parts[:i]...), Err: err}
			}
			var next *Entry
			for _, k := range kids {
				if k.Name == part {
					next = k
					break
				}
			}
			if next == nil {
				return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
			}
			if next.bad != nil {
				return nil, &fs.PathError{Op: "open", Path: path.Join(parts[:i+1]...), Err: next.bad}
			}
			last := i == len(parts)-1
			if next.Mode&fs.ModeSymlink != 0 && (!last || follow) {
				if hops++; hops > maxLinkHops {
					return nil, &fs.PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: more than %d symbolic links", ErrMalformed, maxLinkHops)}
				}
				t := next.Target
				if t == "" || strings.HasPrefix(t, "/") {
					return nil, &fs.PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: %s is a link to %q", ErrEscape, path.Join(parts[:i+1]...), t)}
				}
				dest := path.Join(append(append([]string{}, parts[:i]...), t)...)
				if dest == ".." || strings.HasPrefix(dest, "../") {
					return nil, &fs.PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: %s is a link to %q", ErrEscape, path.Join(parts[:i+1]...), t)}
				}
				if dest == "" {
					dest = "."
				}
				restart = path.Join(append([]string{dest}, parts[i+1:]...)...)
				break
			}
			cur = next
		}
		if restart == "" {
			return cur, nil
		}
		p = restart
	}
}

// reader returns a reader of a regular file's data, its extents joined.
func (im *Image) reader(e *Entry) io.Reader {
	rs := make([]io.Reader, 0, len(e.ext))
	for _, x := range e.ext {
		rs = append(rs, io.NewSectionReader(im.r, x.start, x.length))
	}
	return io.MultiReader(rs...)
}
