package seeder

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/seeder/webseed"
)

// manyRanges is a Range header of n one-byte ranges.
func manyRanges(n int) string {
	var b strings.Builder
	b.WriteString("bytes=")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d-%d", i, i)
	}
	return b.String()
}

// TestOneRangeRule: every file the seeder serves (.torrent files and the
// web seed) follows webseed.ServeContent's rule: more than
// DefaultMaxRanges ranges is a 416 with a short body; a few ranges are
// served. A .torrent answered 4,222 one-byte ranges with a 614 KB body.
func TestOneRangeRule(t *testing.T) {
	p := makeProject(t, "127.0.0.1", 8080, testOS{"alpha", map[string]int64{"vmlinuz": 100 << 10, "initrd.img": 200 << 10}})
	s, _, err := startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path   string
		ranges int
		want   int
	}{
		{"/torrents/alpha.torrent", 4222, http.StatusRequestedRangeNotSatisfiable},
		{"/torrents/alpha.torrent", webseed.DefaultMaxRanges + 1, http.StatusRequestedRangeNotSatisfiable},
		{"/torrents/alpha.torrent", 2, http.StatusPartialContent},
		{"/oss/alpha/vmlinuz", 4222, http.StatusRequestedRangeNotSatisfiable},
		{"/oss/alpha/vmlinuz", 2, http.StatusPartialContent},
		{"/oss/alpha/vmlinuz", 1, http.StatusPartialContent},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		req.Header.Set("Range", manyRanges(tc.ranges))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || n > 4096 {
			t.Errorf("%s with %d ranges: %d, %d bytes; want %d and a short body", tc.path, tc.ranges, resp.StatusCode, n, tc.want)
		}
	}
}
