package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// LockFileName is the file in out/ that a running start holds locked
// (flock, exclusive) and that names its process id.
const LockFileName = "boottorrent.lock"

// errLocked is returned when another process serves the project.
var errLocked = errors.New("project is being served")

// outLock is a held lock on a project's out/ folder.
type outLock struct{ f *os.File }

// lockOut takes the project's lock before anything in out/ is read or
// written. A second start on the same project must touch nothing there:
// loading and compacting out/leases.json replaces the file, and the running
// server would go on appending to the deleted one, losing every lease it
// grants after that. flock is released by the kernel when the holder dies,
// so a kill -9 leaves no stale lock; the pid in the file only names the
// holder in the refusal.
func lockOut(dir string) (*outLock, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the project lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another boottorrent"
			var b [32]byte
			if n, _ := f.ReadAt(b[:], 0); n > 0 {
				if pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n]))); err == nil && pid > 0 {
					holder = fmt.Sprintf("another boottorrent (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("%w: %s is serving this project (%s is locked); stop it first, or start a copy of the project in another folder", errLocked, holder, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The holder writes its pid only once it holds the lock, so a refused
	// start never changes the file.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &outLock{f: f}, nil
}

// unlock releases the lock; the file stays (removing it would let a third
// start lock a new file while a second still holds the old one).
func (l *outLock) unlock() error {
	return l.f.Close()
}
