package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestJournalLog checks the journal format: no time, each line prefixed
// with its sd-daemon priority, and only when stderr is the journal's
// stream.
func TestJournalLog(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !toJournal(f) {
		t.Fatal("the journal's stream not recognised")
	}
	if toJournal(&bytes.Buffer{}) || toJournal(os.Stdout) {
		t.Fatal("another writer taken for the journal")
	}
	log, err := newLogger(f, "debug")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("d", "k", 1)
	log.Info("ready", "http", "http://10.0.0.1:8080")
	log.Warn("w")
	log.Error("e", "err", "boom")
	b, _ := os.ReadFile(f.Name())
	want := `<7>level=DEBUG msg=d k=1
<6>level=INFO msg=ready http=http://10.0.0.1:8080
<4>level=WARN msg=w
<3>level=ERROR msg=e err=boom
`
	if string(b) != want {
		t.Errorf("journal lines:\n%s\nwant:\n%s", b, want)
	}

	// Outside the journal the lines keep their time.
	t.Setenv("JOURNAL_STREAM", "")
	var buf bytes.Buffer
	log, _ = newLogger(&buf, "info")
	log.Info("ready")
	if !strings.HasPrefix(buf.String(), "time=") {
		t.Errorf("plain log line: %q", buf.String())
	}
}
