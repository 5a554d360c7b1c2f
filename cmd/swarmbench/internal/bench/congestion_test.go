package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeCongestion writes the two host-wide lists under a temporary
// folder and returns the folder and the path of the allowed list.
func fakeCongestion(t *testing.T, available, allowed string) (dir, p string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tcp_available_congestion_control"), []byte(available+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p = filepath.Join(dir, "tcp_allowed_congestion_control")
	if err := os.WriteFile(p, []byte(allowed+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, p
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestAllowCongestionAddsAndRestores(t *testing.T) {
	dir, p := fakeCongestion(t, "reno bbr cubic", "reno bbr")
	restore, err := allowCongestion(dir, "cubic")
	if err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, p); got != "reno bbr cubic" {
		t.Errorf("allowed list during the run = %q, want cubic added", got)
	}
	restore()
	if got := readTrim(t, p); got != "reno bbr" {
		t.Errorf("allowed list after restore = %q, want the old %q", got, "reno bbr")
	}
}

func TestAllowCongestionAlreadyAllowed(t *testing.T) {
	dir, p := fakeCongestion(t, "reno cubic", "reno cubic")
	restore, err := allowCongestion(dir, "cubic")
	if err != nil {
		t.Fatal(err)
	}
	restore()
	if got := readTrim(t, p); got != "reno cubic" {
		t.Errorf("allowed list = %q, want it untouched", got)
	}
}

func TestAllowCongestionMissingAlgorithm(t *testing.T) {
	dir, p := fakeCongestion(t, "reno cubic", "reno cubic")
	_, err := allowCongestion(dir, "bbr")
	if err == nil {
		t.Fatal("bbr is not in the available list: want an error")
	}
	for _, want := range []string{"--congestion", "bbr", "tcp_available_congestion_control", "modprobe tcp_bbr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if got := readTrim(t, p); got != "reno cubic" {
		t.Errorf("allowed list = %q, want it untouched after a refusal", got)
	}
}
