package webseed

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func setup(t *testing.T, cfg Config) (*Server, string, []byte) {
	t.Helper()
	dir := t.TempDir()
	osDir := filepath.Join(dir, "debian")
	os.MkdirAll(filepath.Join(osDir, "sub"), 0o755)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	os.WriteFile(filepath.Join(osDir, "vmlinuz"), data, 0o644)
	os.WriteFile(filepath.Join(osDir, "sub", "initrd.img"), data[:1000], 0o644)
	os.WriteFile(filepath.Join(osDir, "secret"), []byte("not listed"), 0o644)
	os.WriteFile(filepath.Join(dir, "outside"), []byte("outside the OS folder"), 0o644)
	os.Symlink("../outside", filepath.Join(osDir, "escape"))
	s := New(cfg)
	if err := s.Add("debian", osDir, []string{"vmlinuz", "sub/initrd.img", "escape"}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv.URL, data
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestServe(t *testing.T) {
	s, base, data := setup(t, Config{MaxRanges: 4})
	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		body   []byte
	}{
		{"whole file", "/oss/debian/vmlinuz", nil, 200, data},
		{"file in a sub folder", "/oss/debian/sub/initrd.img", nil, 200, data[:1000]},
		{"one range", "/oss/debian/vmlinuz", map[string]string{"Range": "bytes=100-199"}, 206, data[100:200]},
		{"suffix range", "/oss/debian/vmlinuz", map[string]string{"Range": "bytes=-10"}, 206, data[len(data)-10:]},
		{"open range", "/oss/debian/vmlinuz", map[string]string{"Range": "bytes=65530-"}, 206, data[65530:]},
		{"unsatisfiable range", "/oss/debian/vmlinuz", map[string]string{"Range": "bytes=70000-"}, 416, nil},
		{"too many ranges", "/oss/debian/vmlinuz", map[string]string{"Range": "bytes=0-0,1-1,2-2,3-3,4-4"}, 416, nil},
		{"file not listed", "/oss/debian/secret", nil, 404, nil},
		{"unknown OS", "/oss/ubuntu/vmlinuz", nil, 404, nil},
		{"dot-dot", "/oss/debian/../debian/vmlinuz", nil, 404, nil},
		{"encoded dot-dot", "/oss/debian/%2e%2e/outside", nil, 404, nil},
		{"listed symlink leading out", "/oss/debian/escape", nil, 404, nil},
		{"folder itself", "/oss/debian/", nil, 404, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := get(t, base+tc.path, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tc.status, b)
			}
			if tc.body != nil && !bytes.Equal(b, tc.body) {
				t.Fatalf("body of %d bytes differs from the expected %d", len(b), len(tc.body))
			}
			if strings.Contains(string(b), "outside the OS folder") {
				t.Fatal("served a file outside the OS folder")
			}
		})
	}
	if s.BytesServed() < int64(len(data)) {
		t.Fatalf("BytesServed %d", s.BytesServed())
	}
}

func TestConditional(t *testing.T) {
	_, base, _ := setup(t, Config{})
	resp, _ := get(t, base+"/oss/debian/vmlinuz", nil)
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" || lm == "" {
		t.Fatalf("ETag %q Last-Modified %q", etag, lm)
	}
	if resp, _ := get(t, base+"/oss/debian/vmlinuz", map[string]string{"If-None-Match": etag}); resp.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	if resp, b := get(t, base+"/oss/debian/vmlinuz", map[string]string{"If-Range": `"other"`, "Range": "bytes=0-9"}); resp.StatusCode != 200 || len(b) != 65536 {
		t.Fatalf("If-Range with a stale ETag: %d, %d bytes; want the whole file", resp.StatusCode, len(b))
	}
}

func TestBusy(t *testing.T) {
	s, base, _ := setup(t, Config{MaxConcurrent: 1})
	s.sem <- struct{}{} // one transfer running
	resp, _ := get(t, base+"/oss/debian/vmlinuz", nil)
	<-s.sem
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp, _ := get(t, base+"/oss/debian/vmlinuz", nil); resp.StatusCode != 200 {
		t.Fatalf("after the slot freed: %d", resp.StatusCode)
	}
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		h    string
		want []Range
		err  error
	}{
		{"bytes=0-9", []Range{{0, 10}}, nil},
		{"bytes=90-", []Range{{90, 10}}, nil},
		{"bytes=-5", []Range{{95, 5}}, nil},
		{"bytes=-500", []Range{{0, 100}}, nil},
		{"bytes=0-999", []Range{{0, 100}}, nil},
		{"bytes=0-0, 5-6", []Range{{0, 1}, {5, 2}}, nil},
		{"bytes=100-", nil, ErrUnsatisfiable},
		{"bytes=-0", nil, ErrUnsatisfiable},
		{"bytes=5-1", nil, ErrRangeSyntax},
		{"bytes=a-b", nil, ErrRangeSyntax},
		{"bytes=+1-2", nil, ErrRangeSyntax},
		{"items=0-1", nil, ErrRangeSyntax},
		{"bytes=99999999999999999999-", nil, ErrRangeSyntax},
		{"bytes=0-1,2-3,4-5", nil, ErrTooManyRanges},
	}
	for _, tc := range cases {
		got, err := ParseRange(tc.h, 100, 2)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: err %v, want %v", tc.h, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.h, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: %v, want %v", tc.h, got, tc.want)
			}
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=5-", "bytes=0-0,1-1", "bytes=,,,", "bytes= 1 - 2 ", "bytes=-", "x"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		rs, err := ParseRange(h, size, 8)
		if err != nil {
			return
		}
		if len(rs) == 0 || len(rs) > 8 {
			t.Fatalf("%d ranges", len(rs))
		}
		for _, r := range rs {
			if r.Start < 0 || r.Length <= 0 || r.Start+r.Length > size {
				t.Fatalf("range %+v outside a %d-byte file (%q)", r, size, h)
			}
		}
	})
}
