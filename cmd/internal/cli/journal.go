package cli

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
)

// journalHandler is the log handler for a stderr connected to systemd's
// journal (a service's default): the journal stamps each line with its
// own time, so the line carries none, and its level becomes the
// sd-daemon(3) priority prefix ("<3>" error ... "<7>" debug) that
// journalctl -p filters on.
func journalHandler(w io.Writer, level slog.Level) slog.Handler {
	return slog.NewTextHandler(journalWriter{w}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
}

// journalWriter prefixes each record, which the text handler writes in
// one Write starting with "level=", with its sd-daemon priority.
type journalWriter struct{ w io.Writer }

func (j journalWriter) Write(p []byte) (int, error) {
	prio := "<6>"
	for _, l := range []struct{ name, prio string }{
		{"level=ERROR", "<3>"}, {"level=WARN", "<4>"}, {"level=INFO", "<6>"}, {"level=DEBUG", "<7>"},
	} {
		if bytes.HasPrefix(p, []byte(l.name)) {
			prio = l.prio
			break
		}
	}
	if _, err := j.w.Write(append([]byte(prio), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// toJournal reports whether w is this process's stderr and that stderr
// is the stream systemd connected to the journal: JOURNAL_STREAM holds
// its device and inode (systemd.exec(5)); a redirected stderr does not
// match and keeps the plain format.
func toJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	js := os.Getenv("JOURNAL_STREAM")
	if !ok || js == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
