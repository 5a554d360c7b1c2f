package dhcp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The lease file is a journal of JSON lines, one record per change, after a
// header line. Appending costs one write(2) per lease (Kea's memfile does
// the same); the file is rewritten (temp file, fsync, rename) at start and
// whenever it holds more than twice the live records. A failed append (a
// full disk) is cut off again, so the file always ends on a complete record;
// a torn line a crash left behind is skipped on load, and a complete record
// glued onto it by a later append is still read.
const leaseFileHeader = `{"boottorrent_leases":1}`

func (p *pool) load(now time.Time) error {
	f, err := os.Open(p.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	first := true
	lineNo := 0
	bad := 0
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			line = bytes.TrimSpace(line)
			if first {
				first = false
				if string(line) != leaseFileHeader {
					return fmt.Errorf("lease file %s is not a boottorrent lease file (first line %.40q); move it away to start with no leases", p.file, line)
				}
			} else if len(line) > 0 {
				l, ok := parseRecord(line)
				if !ok {
					bad++
					if err != io.EOF { // a torn last line is expected after a crash
						p.log.Warn("lease file: bad record skipped", "file", p.file, "line", lineNo)
					}
				} else {
					p.apply(l, now)
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("lease file %s: %w", p.file, err)
		}
	}
	p.log.Info("dhcp leases loaded", "file", p.file, "leases", len(p.byIP), "records", lineNo-1, "skipped", bad)
	return nil
}

// recordStart begins every record: json.Marshal writes the fields of lease
// in order, and a string value cannot hold it unescaped.
var recordStart = []byte(`{"ip":`)

// parseRecord decodes one journal line. A line that does not parse may be a
// record torn by a crash or a full disk with a whole record appended after
// it (files written before 2026-12-08 did not cut failed appends off): the
// last record start in the line is tried as well.
func parseRecord(line []byte) (lease, bool) {
	var l lease
	if json.Unmarshal(line, &l) == nil && l.IP.Is4() {
		return l, true
	}
	if i := bytes.LastIndex(line, recordStart); i > 0 {
		l = lease{}
		if json.Unmarshal(line[i:], &l) == nil && l.IP.Is4() {
			return l, true
		}
	}
	return lease{}, false
}

// apply replays one journal record.
func (p *pool) apply(l lease, now time.Time) {
	v := u32(l.IP)
	if !p.inRange(v) {
		return // the range shrank: forget addresses outside it
	}
	switch l.State {
	case stateFree:
		if old := p.byIP[v]; old != nil {
			if old.MAC != "" && p.byMAC[old.MAC] == old {
				delete(p.byMAC, old.MAC)
			}
			delete(p.byIP, v)
		}
	case stateBound, stateReleased, stateDeclined:
		if l.State == stateDeclined {
			l.MAC = ""
		}
		nl := l
		if old := p.byIP[v]; old != nil && old.MAC != "" && p.byMAC[old.MAC] == old {
			delete(p.byMAC, old.MAC)
		}
		if nl.MAC != "" {
			if old := p.byMAC[nl.MAC]; old != nil && p.byIP[u32(old.IP)] == old {
				delete(p.byIP, u32(old.IP))
			}
			p.byMAC[nl.MAC] = &nl
		}
		p.byIP[v] = &nl
	}
}

// journal appends one record; without a lease file it does nothing.
func (p *pool) journal(l lease) error {
	if p.file == "" {
		return nil
	}
	if p.closed {
		return errors.New("lease file closed")
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if p.writeFn != nil {
		err = p.writeFn(b)
	} else {
		_, err = p.f.Write(b)
	}
	if err != nil {
		// A short write (ENOSPC) leaves part of the record: cut it off, so
		// the next append starts on a line of its own.
		if p.f != nil {
			if terr := errors.Join(p.f.Truncate(p.end), seekTo(p.f, p.end)); terr != nil {
				p.log.Error("lease file: a failed append could not be cut off", "file", p.file, "err", terr)
			}
		}
		return fmt.Errorf("lease file %s: %w", p.file, err)
	}
	p.end += int64(len(b))
	p.lines++
	if p.lines > 2*len(p.byIP)+1024 {
		if err := p.compact(); err != nil {
			p.log.Warn("lease file compaction failed", "file", p.file, "err", err)
		}
	}
	return nil
}

// compact rewrites the lease file with the live records, atomically.
func (p *pool) compact() error {
	ips := make([]uint32, 0, len(p.byIP))
	for v, l := range p.byIP {
		if l.State != stateOffered {
			ips = append(ips, v)
		}
	}
	slices.Sort(ips)
	var buf bytes.Buffer
	buf.WriteString(leaseFileHeader + "\n")
	for _, v := range ips {
		b, _ := json.Marshal(p.byIP[v])
		buf.Write(b)
		buf.WriteByte('\n')
	}
	dir := filepath.Dir(p.file)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".leases-*")
	if err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	if err := os.Rename(tmp.Name(), p.file); err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	if p.f != nil {
		p.f.Close()
	}
	// The renamed temp file is the new journal: keep appending to it.
	p.f = tmp
	p.end = int64(buf.Len())
	p.lines = 0
	return nil
}

func seekTo(f *os.File, off int64) error {
	_, err := f.Seek(off, io.SeekStart)
	return err
}

func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.f == nil {
		return nil
	}
	err := p.f.Sync()
	return errors.Join(err, p.f.Close())
}
