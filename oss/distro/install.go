package distro

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boottorrent/boottorrent/oss"
)

// Medium is the image a plan is installed from.
type Medium struct {
	FS   fs.FS       // its files (package iso9660's FS)
	ISO  io.ReaderAt // the image itself, for Plan.WholeISO
	Size int64       // the image's size
}

// Progress is told how far the copy of one file is: done == total at its
// end. It is called at most once per copied chunk.
type Progress func(file string, done, total int64)

// maxInitrdFile is the largest file the boot client can append to an
// initrd: newc's file size field is 8 hex digits.
const maxInitrdFile = 1<<32 - 1

// chunk is the copy buffer; progress is reported once per chunk.
const chunk = 4 << 20

// Install writes the OS folder ossDir/name for plan p from m, with config
// as its config.yaml. Everything is written into a hidden temporary folder
// in ossDir (LoadAll skips it) and renamed into place only when complete,
// so an interrupted or failed add leaves no OS folder behind; an existing
// folder is never replaced. It returns the folder's total size.
func Install(ctx context.Context, m Medium, p *Plan, ossDir, name string, config []byte, progress Progress) (int64, error) {
	final := filepath.Join(ossDir, name)
	if _, err := os.Lstat(final); err == nil {
		return 0, fmt.Errorf("%s exists already; choose another NAME or remove that folder first", final)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	sizes, total, err := p.sizes(m)
	if err != nil {
		return 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(ossDir, &st); err == nil {
		if free := int64(st.Bavail) * st.Bsize; free < total+64<<20 {
			return 0, fmt.Errorf("%s has %s free; the OS needs %s (plus 64 MiB to spare): free some space", ossDir, oss.SizeText(free), oss.SizeText(total))
		}
	}
	tmp, err := os.MkdirTemp(ossDir, "."+name+".add-")
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	for _, f := range p.Copy {
		src, err := m.FS.Open(f)
		if err != nil {
			return 0, fmt.Errorf("read %s from the image: %w", f, err)
		}
		err = copyFile(ctx, root, f, src, sizes[f], progress)
		src.Close()
		if err != nil {
			return 0, err
		}
	}
	if p.WholeISO != "" {
		if err := copyFile(ctx, root, p.WholeISO, io.NewSectionReader(m.ISO, 0, m.Size), m.Size, progress); err != nil {
			return 0, err
		}
	}
	for _, g := range p.Generated {
		if err := root.WriteFile(g.Path, []byte(g.Content), 0o644); err != nil {
			return 0, err
		}
	}
	if err := root.WriteFile(oss.ConfigName, config, 0o644); err != nil {
		return 0, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return 0, err
	}
	if err := syncDir(tmp); err != nil {
		return 0, err
	}
	// RENAME_NOREPLACE: a folder created meanwhile is not replaced (a plain
	// rename would replace an empty one).
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE); err != nil {
		return 0, fmt.Errorf("rename %s to %s: %w", tmp, final, err)
	}
	ok = true
	return total, syncDir(ossDir)
}

// sizes checks every file the plan copies and adds up the folder's size.
func (p *Plan) sizes(m Medium) (map[string]int64, int64, error) {
	sizes := map[string]int64{}
	var total int64
	for _, f := range p.Copy {
		fi, err := fs.Stat(m.FS, f)
		if err != nil {
			return nil, 0, fmt.Errorf("read %s from the image: %w", f, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, 0, fmt.Errorf("%s in the image is not a regular file", f)
		}
		sizes[f] = fi.Size()
		total += fi.Size()
	}
	if p.WholeISO != "" {
		sizes[p.WholeISO] = m.Size
		total += m.Size
	}
	for _, f := range p.InitrdFiles {
		if sizes[f.File] > maxInitrdFile {
			return nil, 0, fmt.Errorf("%s is %s: the boot client hands files to the initramfs in a newc archive, which holds files under 4 GiB; this medium cannot be handed over whole (see the README's manual recipes)", f.File, oss.SizeText(sizes[f.File]))
		}
	}
	return sizes, total, nil
}

// copyFile copies size bytes from src to name inside root, creating its
// folders, and fails when src has fewer or more bytes (a truncated image).
func copyFile(ctx context.Context, root *os.Root, name string, src io.Reader, size int64, progress Progress) error {
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	dst, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer dst.Close()
	buf := make([]byte, chunk)
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("copy %s: %w", name, err)
		}
		n, err := io.ReadFull(src, buf[:min(int64(len(buf)), size-done)])
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write %s: %w", name, werr)
			}
			done += int64(n)
			if progress != nil {
				progress(name, done, size)
			}
		}
		if err != nil {
			return fmt.Errorf("read %s from the image after %d of %d bytes: %w", name, done, size, err)
		}
	}
	if n, _ := src.Read(buf[:1]); n != 0 {
		return fmt.Errorf("read %s from the image: more than its %d bytes", name, size)
	}
	if size == 0 && progress != nil {
		progress(name, 0, 0)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return dst.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}
