// Package iso9660 reads the files of an ISO 9660 image (a distribution's
// install or live medium) without mounting it: Rock Ridge names, modes and
// symbolic links, Joliet names when there is no Rock Ridge, and files larger
// than 4 GiB stored in several extents. It owns the on-disc format and the
// bounds that make a hostile image safe to read; it must not know what a
// distribution is (package distro does).
//
// An image is untrusted input. Every length read from it is checked against
// the image's size before anything is allocated or read; directory bytes,
// System Use continuation areas, entries per directory, extents per file and
// symbolic-link hops are capped; names that could leave a folder ("..", "/",
// NUL) are refused; a symbolic link may only lead to another place inside
// the image. The format is ECMA-119 (ISO 9660), IEEE P1281 (SUSP) and P1282
// (Rock Ridge), and Microsoft's Joliet specification.
package iso9660

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"unicode/utf16"
)

const (
	sectorSize = 2048
	// firstDescriptor is the first volume descriptor's sector (ECMA-119
	// 6.2.1: sectors 0-15 are the system area).
	firstDescriptor = 16
	// maxDescriptors bounds the scan for the set terminator; real images
	// have 3 to 5 descriptors.
	maxDescriptors = 64
	// maxDirBytes bounds one directory's extent; a directory of 100,000
	// entries with long Rock Ridge names fits in about 16 MiB.
	maxDirBytes = 16 << 20
	// maxEntries bounds the entries of one directory.
	maxEntries = 100_000
	// maxTotalDirBytes bounds all directory bytes read through one Image,
	// so that crafted directories pointing at each other cannot make a walk
	// read without end.
	maxTotalDirBytes = 256 << 20
	// maxContinuations bounds the SUSP continuation areas (CE) followed for
	// one directory record; real images need at most a few.
	maxContinuations = 16
	// maxExtents bounds the sections of one multi-extent file: 4,096 extents
	// of just under 4 GiB each are 16 TiB.
	maxExtents = 4096
	// maxLinkHops bounds symbolic links followed while resolving one path.
	maxLinkHops = 16
	// maxDepth bounds the components of a path.
	maxDepth = 64
)

// Sentinel errors; callers branch on them with errors.Is.
var (
	// ErrNotISO means the data has no ISO 9660 primary volume descriptor.
	ErrNotISO = errors.New("not an ISO 9660 image")
	// ErrMalformed means the image breaks the format or one of the bounds.
	ErrMalformed = errors.New("malformed ISO 9660 image")
	// ErrEscape means a name or a symbolic link would lead out of the image.
	ErrEscape = errors.New("path leads out of the image")
)

// Names says which naming the image's directories are read with.
type Names int

const (
	// NamesPlain are ISO 9660 identifiers, shown as Linux shows them
	// (lower case, without ";1" and a trailing dot).
	NamesPlain Names = iota
	// NamesJoliet are the Joliet tree's UCS-2 names.
	NamesJoliet
	// NamesRockRidge are Rock Ridge NM names, with POSIX modes and links.
	NamesRockRidge
)

func (n Names) String() string {
	switch n {
	case NamesJoliet:
		return "Joliet"
	case NamesRockRidge:
		return "Rock Ridge"
	}
	return "ISO 9660"
}

// Image is an opened ISO 9660 image.
type Image struct {
	r        io.ReaderAt
	size     int64
	volumeID string
	names    Names
	suspSkip int // SUSP "SP" bytes to skip in each System Use field
	root     *Entry
	dirBytes int64 // directory bytes read so far (maxTotalDirBytes)
}

// extent is one contiguous run of a file's data.
type extent struct {
	start, length int64 // byte offset in the image and length
}

// Entry is one directory entry.
type Entry struct {
	Name   string
	Mode   fs.FileMode // fs.ModeDir, fs.ModeSymlink or a regular file, with permissions when Rock Ridge gives them
	Size   int64       // bytes of a regular file (all extents)
	Target string      // a symbolic link's target, as written
	ext    []extent
	bad    error // why the entry cannot be read (its data lies past the end)
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Mode.IsDir() }

// Open reads the image's volume descriptors. size is the image's length in
// bytes; nothing outside [0, size) is ever read.
func Open(r io.ReaderAt, size int64) (*Image, error) {
	im := &Image{r: r, size: size}
	var pvd, joliet []byte
	for i := 0; i < maxDescriptors; i++ {
		b := make([]byte, sectorSize)
		if err := im.readAt(b, int64(firstDescriptor+i)*sectorSize); err != nil {
			if pvd != nil {
				return nil, fmt.Errorf("%w: volume descriptor %d: %w", ErrMalformed, i, err)
			}
			return nil, ErrNotISO
		}
		if string(b[1:6]) != "CD001" {
			if pvd != nil {
				return nil, fmt.Errorf("%w: volume descriptor %d has no CD001 signature", ErrMalformed, i)
			}
			return nil, ErrNotISO
		}
		switch b[0] {
		case 1: // primary (ECMA-119 8.4)
			if pvd == nil {
				pvd = b
			}
		case 2: // supplementary: Joliet when its escape sequence names UCS-2 level 1, 2 or 3
			esc := b[88:120]
			if joliet == nil && (bytes.Contains(esc, []byte("%/@")) || bytes.Contains(esc, []byte("%/C")) || bytes.Contains(esc, []byte("%/E"))) {
				joliet = b
			}
		case 255: // set terminator
			i = maxDescriptors
		}
	}
	if pvd == nil {
		return nil, ErrNotISO
	}
	if bs := binary.LittleEndian.Uint16(pvd[128:130]); bs != sectorSize {
		return nil, fmt.Errorf("%w: logical block size %d (only 2048 is supported)", ErrMalformed, bs)
	}
	im.volumeID = strings.TrimRight(string(pvd[40:72]), " \x00")
	root, err := im.record(pvd[156:190], false)
	if err != nil || root == nil || !root.IsDir() {
		return nil, fmt.Errorf("%w: root directory record: %v", ErrMalformed, err)
	}
	im.root = root
	// Rock Ridge is announced by an SUSP "SP" entry at the start of the
	// System Use field of the root's "." record (SUSP 5.3).
	if skip, ok, err := im.rootSUSP(root); err != nil {
		return nil, err
	} else if ok {
		im.names, im.suspSkip = NamesRockRidge, skip
		return im, nil
	}
	if joliet != nil {
		jr, err := im.record(joliet[156:190], true)
		if err == nil && jr != nil && jr.IsDir() {
			im.names, im.root = NamesJoliet, jr
		}
	}
	return im, nil
}

// VolumeID is the primary volume's identifier (the ISO's label).
func (im *Image) VolumeID() string { return im.volumeID }

// Names says how the image's names are read.
func (im *Image) Names() Names { return im.names }

// readAt reads len(b) bytes at off, all inside the image.
func (im *Image) readAt(b []byte, off int64) error {
	if off < 0 || off > im.size || int64(len(b)) > im.size-off {
		return fmt.Errorf("%w: %d bytes at offset %d are past the image's end (%d bytes; truncated?)", ErrMalformed, len(b), off, im.size)
	}
	n, err := im.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(b), off, err)
}

// rootSUSP reads the root's "." record and reports the SP entry's skip.
func (im *Image) rootSUSP(root *Entry) (skip int, ok bool, err error) {
	if len(root.ext) != 1 || root.ext[0].length < 34 {
		return 0, false, nil
	}
	b := make([]byte, sectorSize)
	if err := im.readAt(b[:min(int64(sectorSize), root.ext[0].length)], root.ext[0].start); err != nil {
		return 0, false, err
	}
	n := int(b[0])
	if n < 34 || int(b[32]) != 1 || b[33] != 0 {
		return 0, false, nil
	}
	su := systemUse(b[:n])
	// SP: "SP", length 7, version 1, check bytes BE EF, bytes to skip.
	if len(su) >= 7 && su[0] == 'S' && su[1] == 'P' && su[2] == 7 && su[4] == 0xBE && su[5] == 0xEF {
		return int(su[6]), true, nil
	}
	return 0, false, nil
}

// systemUse returns a directory record's System Use field (ECMA-119 9.1.13).
func systemUse(rec []byte) []byte {
	nameLen := int(rec[32])
	start := 33 + nameLen
	if nameLen%2 == 0 {
		start++ // padding byte after an even-length identifier
	}
	if start > len(rec) {
		return nil
	}
	return rec[start:]
}

// record decodes one directory record (ECMA-119 9.1) with its System Use
// entries. It returns nil for the "." and ".." records and for records
// Rock Ridge says to hide (RE: a relocated directory shown elsewhere).
func (im *Image) record(rec []byte, joliet bool) (*Entry, error) {
	if len(rec) < 34 || int(rec[0]) > len(rec) || int(rec[0]) < 34 {
		return nil, fmt.Errorf("%w: directory record of %d bytes", ErrMalformed, len(rec))
	}
	rec = rec[:rec[0]]
	nameLen := int(rec[32])
	if 33+nameLen > len(rec) {
		return nil, fmt.Errorf("%w: name of %d bytes in a record of %d", ErrMalformed, nameLen, len(rec))
	}
	id := rec[33 : 33+nameLen]
	flags := rec[25]
	start := int64(binary.LittleEndian.Uint32(rec[2:6])) * sectorSize
	length := int64(binary.LittleEndian.Uint32(rec[10:14]))
	e := &Entry{ext: []extent{{start, length}}, Size: length, Mode: 0o444}
	if flags&0x02 != 0 {
		e.Mode = fs.ModeDir | 0o555
		e.Size = 0
	}
	dot := nameLen == 1 && (id[0] == 0 || id[0] == 1)
	switch {
	case dot:
		e.Name = "."
	case joliet:
		if nameLen%2 != 0 {
			return nil, fmt.Errorf("%w: Joliet name of odd length %d", ErrMalformed, nameLen)
		}
		u := make([]uint16, nameLen/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(id[2*i:])
		}
		e.Name = trimVersion(string(utf16.Decode(u)))
	default:
		e.Name = strings.ToLower(trimVersion(string(id)))
	}
	if im.names == NamesRockRidge && !joliet {
		hide, err := im.rockRidge(e, systemUse(rec))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e.Name, err)
		}
		if hide {
			return nil, nil
		}
	}
	if dot {
		if start > im.size || length > im.size-start {
			return nil, fmt.Errorf("%w: a directory's data lies past the image's end (truncated?)", ErrMalformed)
		}
		return e, nil // the caller tells "." from ".."
	}
	if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
		return nil, fmt.Errorf("%w: entry named %q", ErrEscape, e.Name)
	}
	if flags&0x80 != 0 {
		e.Mode |= modeMoreExtents
	}
	// Data past the end is an error of this entry only, reported when it is
	// opened: the rest of its directory stays readable.
	if start > im.size || length > im.size-start {
		e.bad = fmt.Errorf("%w: the data of %s (%d bytes at offset %d) lies past the image's end (%d bytes; truncated?)", ErrMalformed, e.Name, length, start, im.size)
		e.ext = nil
	}
	return e, nil
}

// modeMoreExtents marks, while a directory is read, a record whose file
// continues in the next record (ECMA-119 9.1.6 bit 7, multi-extent).
const modeMoreExtents = fs.ModeTemporary

// trimVersion drops ";1" and a trailing "." (Linux's map=normal view).
func trimVersion(s string) string {
	if i := strings.LastIndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSuffix(s, ".")
}

// rockRidge applies a record's SUSP entries: NM (name), PX (mode), SL
// (link target), CL (a relocated directory's real place), RE (hide), and
// follows CE continuation areas within the bounds.
func (im *Image) rockRidge(e *Entry, su []byte) (hide bool, err error) {
	if im.suspSkip > len(su) {
		return false, nil
	}
	su = su[im.suspSkip:]
	var name, target strings.Builder
	var haveName, linkDone bool
	for hop := 0; ; hop++ {
		var ce []byte
		for len(su) >= 4 {
			n := int(su[2])
			if n < 4 || n > len(su) {
				return false, fmt.Errorf("%w: System Use entry %q of length %d", ErrMalformed, su[:2], n)
			}
			d := su[4:n]
			switch string(su[:2]) {
			case "NM": // P1282 4.1.4
				if len(d) >= 1 && d[0]&0x06 == 0 {
					name.Write(d[1:])
					haveName = true
				}
			case "PX": // P1282 4.1.1
				if len(d) >= 8 {
					e.Mode = posixMode(binary.LittleEndian.Uint32(d[0:4]), e.Mode)
				}
			case "SL": // P1282 4.1.3
				if len(d) >= 1 && !linkDone {
					if err := slComponents(&target, d[1:]); err != nil {
						return false, err
					}
					linkDone = d[0]&0x01 == 0
				}
			case "CL": // P1282 4.1.5.1: the directory lives at another location
				if len(d) >= 8 {
					if err := im.childLink(e, int64(binary.LittleEndian.Uint32(d[0:4]))*sectorSize); err != nil {
						return false, err
					}
				}
			case "RE": // P1282 4.1.5.3
				hide = true
			case "CE": // SUSP 5.1
				if len(d) >= 24 {
					ce = d
				}
			case "ST": // SUSP 5.4
				su = nil
				continue
			}
			su = su[n:]
		}
		if ce == nil {
			break
		}
		if hop >= maxContinuations {
			return false, fmt.Errorf("%w: more than %d continuation areas", ErrMalformed, maxContinuations)
		}
		off := int64(binary.LittleEndian.Uint32(ce[0:4]))*sectorSize + int64(binary.LittleEndian.Uint32(ce[8:12]))
		n := int64(binary.LittleEndian.Uint32(ce[16:20]))
		if n > sectorSize {
			return false, fmt.Errorf("%w: continuation area of %d bytes", ErrMalformed, n)
		}
		su = make([]byte, n)
		if err := im.readAt(su, off); err != nil {
			return false, err
		}
	}
	if haveName {
		e.Name = name.String()
	}
	if e.Mode&fs.ModeSymlink != 0 {
		e.Target = target.String()
		e.Size = 0
	}
	return hide, nil
}

// childLink points a CL placeholder at the relocated directory, whose size
// is in its own "." record.
func (im *Image) childLink(e *Entry, start int64) error {
	b := make([]byte, 34)
	if err := im.readAt(b, start); err != nil {
		return err
	}
	length := int64(binary.LittleEndian.Uint32(b[10:14]))
	if length > im.size-start {
		return fmt.Errorf("%w: relocated directory past the image's end", ErrMalformed)
	}
	e.ext = []extent{{start, length}}
	e.Mode = fs.ModeDir | e.Mode.Perm()
	e.Size = 0
	return nil
}

func posixMode(m uint32, old fs.FileMode) fs.FileMode {
	perm := fs.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		return fs.ModeDir | perm
	case 0o120000:
		return fs.ModeSymlink | perm
	case 0o100000:
		return perm
	case 0:
		return old
	}
	return fs.ModeIrregular | perm
}

// slComponents appends an SL entry's components to a link target.
func slComponents(t *strings.Builder, d []byte) error {
	for len(d) >= 2 {
		flags, n := d[0], int(d[1])
		if 2+n > len(d) {
			return fmt.Errorf("%w: symbolic link component of %d bytes", ErrMalformed, n)
		}
		sep := t.Len() > 0 && !strings.HasSuffix(t.String(), "/")
		switch {
		case flags&0x08 != 0: // root
			t.Reset()
			t.WriteString("/")
			sep = false
		case flags&0x02 != 0:
			if sep {
				t.WriteByte('/')
			}
			t.WriteString(".")
		case flags&0x04 != 0:
			if sep {
				t.WriteByte('/')
			}
			t.WriteString("..")
		default:
			if sep {
				t.WriteByte('/')
			}
			t.Write(d[2 : 2+n])
		}
		if t.Len() > 4096 {
			return fmt.Errorf("%w: symbolic link target longer than 4096 bytes", ErrMalformed)
		}
		d = d[2+n:]
	}
	return nil
}

// readDir reads a directory's entries, joining multi-extent files.
func (im *Image) readDir(dir *Entry) ([]*Entry, error) {
	if !dir.IsDir() || len(dir.ext) != 1 {
		return nil, fmt.Errorf("%w: not a directory", ErrMalformed)
	}
	x := dir.ext[0]
	if x.length > maxDirBytes {
		return nil, fmt.Errorf("%w: directory of %d bytes (limit %d)", ErrMalformed, x.length, maxDirBytes)
	}
	if im.dirBytes += x.length; im.dirBytes > maxTotalDirBytes {
		return nil, fmt.Errorf("%w: more than %d bytes of directories read (a directory loop?)", ErrMalformed, maxTotalDirBytes)
	}
	b := make([]byte, x.length)
	if err := im.readAt(b, x.start); err != nil {
		return nil, err
	}
	joliet := im.names == NamesJoliet
	var out []*Entry
	var open *Entry // a multi-extent file whose next section is awaited
	for off := 0; off < len(b); {
		n := int(b[off])
		if n == 0 { // records do not cross sectors: skip to the next one
			off = (off/sectorSize + 1) * sectorSize
			continue
		}
		if n < 34 || off+n > len(b) || off/sectorSize != (off+n-1)/sectorSize {
			return nil, fmt.Errorf("%w: directory record of %d bytes at offset %d", ErrMalformed, n, off)
		}
		e, err := im.record(b[off:off+n], joliet)
		if err != nil {
			return nil, err
		}
		off += n
		if e == nil || e.Name == "." {
			continue
		}
		if open != nil {
			if e.Name != open.Name || e.IsDir() {
				return nil, fmt.Errorf("%w: %q has a missing final extent", ErrMalformed, open.Name)
			}
			if len(open.ext) >= maxExtents {
				return nil, fmt.Errorf("%w: %q has more than %d extents", ErrMalformed, open.Name, maxExtents)
			}
			open.ext = append(open.ext, e.ext...)
			open.Size += e.Size
			if e.bad != nil {
				open.bad = e.bad
			}
			// Extents may overlap in a crafted image; a file larger than the
			// image holding it is refused, which bounds what reading it costs.
			if open.Size > im.size && open.bad == nil {
				open.bad = fmt.Errorf("%w: %s claims %d bytes in an image of %d", ErrMalformed, open.Name, open.Size, im.size)
			}
			if e.Mode&modeMoreExtents == 0 {
				open = nil
			}
			continue
		}
		if len(out) >= maxEntries {
			return nil, fmt.Errorf("%w: directory with more than %d entries", ErrMalformed, maxEntries)
		}
		out = append(out, e)
		if e.Mode&modeMoreExtents != 0 {
			if e.IsDir() {
				return nil, fmt.Errorf("%w: directory %q in several extents", ErrMalformed, e.Name)
			}
			e.Mode &^= modeMoreExtents
			open = e
		}
	}
	if open != nil {
		return nil, fmt.Errorf("%w: %q has a missing final extent", ErrMalformed, open.Name)
	}
	return out, nil
}
