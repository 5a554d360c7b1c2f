package swarm

import (
	"testing"
	"time"
)

// TestReportEvery: a class of machines reports less often the larger it
// is, and a machine still reports three times within PeerMaxAge.
func TestReportEvery(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{0, 2 * time.Second}, {1, 2 * time.Second}, {20, 2 * time.Second}, {21, 4 * time.Second}, {30, 4 * time.Second}, {100, 10 * time.Second}, {4096, MaxReportInterval}} {
		if got := ReportEvery(c.n); got != c.want {
			t.Errorf("ReportEvery(%d) = %s, want %s", c.n, got, c.want)
		}
	}
	// Three reports fit in PeerMaxAge at the longest interval, so a
	// machine that lost one or two is still handed out as a peer.
	if 3*MaxReportInterval > PeerMaxAge {
		t.Errorf("MaxReportInterval %s: three reports do not fit in PeerMaxAge %s", MaxReportInterval, PeerMaxAge)
	}
}
