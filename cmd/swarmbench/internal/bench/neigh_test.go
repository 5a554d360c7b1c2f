package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestNeighThresholds(t *testing.T) {
	for _, hosts := range []int{2, 21, 31, 101} {
		th := neighThresholds(hosts)
		if th[0] < hosts*hosts {
			t.Errorf("%d hosts: gc_thresh1 %d would collect entries in use (%d pairs)", hosts, th[0], hosts*hosts)
		}
		if !(th[0] < th[1] && th[1] < th[2]) {
			t.Errorf("%d hosts: thresholds %v not increasing", hosts, th)
		}
	}
}

// fakeNeigh writes gc_thresh files with the given values under a
// temporary folder, which it returns.
func fakeNeigh(t *testing.T, vals map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, fam := range []string{"ipv4", "ipv6"} {
		p := filepath.Join(dir, fam, "neigh", "default")
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for k, v := range vals {
			if err := os.WriteFile(filepath.Join(p, k), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func readThresh(t *testing.T, dir, fam, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, fam, "neigh", "default", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestRaiseNeighLimitsRestores(t *testing.T) {
	dir := fakeNeigh(t, map[string]string{"gc_thresh1": "128", "gc_thresh2": "512", "gc_thresh3": "1024"})
	restore, err := raiseNeighLimits(dir, 101)
	if err != nil {
		t.Fatal(err)
	}
	want := neighThresholds(101)
	for _, fam := range []string{"ipv4", "ipv6"} {
		for k, name := range []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"} {
			if got := readThresh(t, dir, fam, name); got != strconv.Itoa(want[k]) {
				t.Errorf("%s %s = %s during the run, want %d", fam, name, got, want[k])
			}
		}
	}
	restore()
	for _, fam := range []string{"ipv4", "ipv6"} {
		for name, old := range map[string]string{"gc_thresh1": "128", "gc_thresh2": "512", "gc_thresh3": "1024"} {
			if got := readThresh(t, dir, fam, name); got != old {
				t.Errorf("%s %s = %s after restore, want %s", fam, name, got, old)
			}
		}
	}
}

func TestRaiseNeighLimitsKeepsHigher(t *testing.T) {
	dir := fakeNeigh(t, map[string]string{"gc_thresh1": "1000000", "gc_thresh2": "2000000", "gc_thresh3": "4000000"})
	restore, err := raiseNeighLimits(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	if got := readThresh(t, dir, "ipv4", "gc_thresh3"); got != "4000000" {
		t.Errorf("a higher limit was lowered to %s", got)
	}
}

func TestRaiseNeighLimitsBadValue(t *testing.T) {
	dir := fakeNeigh(t, map[string]string{"gc_thresh1": "128", "gc_thresh2": "lots", "gc_thresh3": "1024"})
	_, err := raiseNeighLimits(dir, 101)
	if err == nil || !strings.Contains(err.Error(), "gc_thresh2") {
		t.Fatalf("err = %v, want one naming gc_thresh2", err)
	}
	// Nothing stays raised after the failure.
	if got := readThresh(t, dir, "ipv4", "gc_thresh3"); got != "1024" {
		t.Errorf("gc_thresh3 left at %s after a failed raise", got)
	}
}

func TestRaiseNeighLimitsWithoutIPv6(t *testing.T) {
	dir := fakeNeigh(t, map[string]string{"gc_thresh1": "128", "gc_thresh2": "512", "gc_thresh3": "1024"})
	if err := os.RemoveAll(filepath.Join(dir, "ipv6")); err != nil {
		t.Fatal(err)
	}
	restore, err := raiseNeighLimits(dir, 101)
	if err != nil {
		t.Fatalf("a kernel without IPv6: %v", err)
	}
	restore()
	if got := readThresh(t, dir, "ipv4", "gc_thresh3"); got != "1024" {
		t.Errorf("gc_thresh3 = %s after restore, want 1024", got)
	}
}
