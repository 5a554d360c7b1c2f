package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// cuttingServer serves content at /f with an ETag. The first cuts
// answers stop after cutAt bytes (the connection is dropped, as a server
// drops a transfer that took nothing for its idle timeout); later ones
// are whole, honouring Range and If-Range unless ignoreRange.
type cuttingServer struct {
	content     []byte
	cutAt       int
	cuts        int
	ignoreRange bool

	mu       sync.Mutex
	requests []http.Header
}

func (s *cuttingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Header.Clone())
	n := len(s.requests)
	s.mu.Unlock()
	w.Header().Set("ETag", `"v1"`)
	if n <= s.cuts {
		// Cut after cutAt bytes of what was asked for: the whole file, or
		// the rest from a Range's start.
		from := 0
		if r, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok && !s.ignoreRange {
			from, _ = strconv.Atoi(strings.TrimSuffix(r, "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(s.content)-1, len(s.content)))
			w.Header().Set("Content-Length", strconv.Itoa(len(s.content)-from))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(s.content)))
			w.WriteHeader(http.StatusOK)
		}
		w.Write(s.content[from : from+s.cutAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	if s.ignoreRange {
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(s.content))
}

func fetchOne(t *testing.T, s *cuttingServer) (*httpDL, string, error) {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	d := &httpDL{total: int64(len(s.content))}
	dst := filepath.Join(t.TempDir(), "sub", "f")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d, dst, d.one(ctx, srv.Client(), srv.URL+"/f", dst)
}

// fetchWhole fetches s's file and fails unless it arrived whole and was
// counted once.
func fetchWhole(t *testing.T, s *cuttingServer) {
	t.Helper()
	d, dst, err := fetchOne(t, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, s.content) {
		t.Fatalf("file: %d bytes (%v), want the served %d bytes", len(got), err, len(s.content))
	}
	if d.done.Load() != int64(len(s.content)) {
		t.Errorf("counted %d bytes, want %d (a part written twice is counted once)", d.done.Load(), len(s.content))
	}
}

func randomContent(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestHTTPResumesCutTransfer: a transfer dropped mid-body goes on from
// where it stopped (Range from the bytes written, If-Range the first
// answer's ETag) and the file is whole, counted once.
func TestHTTPResumesCutTransfer(t *testing.T) {
	s := &cuttingServer{content: randomContent(t, 1<<20), cutAt: 300 << 10, cuts: 2}
	fetchWhole(t, s)
	if len(s.requests) != 3 {
		t.Fatalf("%d requests, want 3 (two cut, one whole)", len(s.requests))
	}
	if r := s.requests[0].Get("Range"); r != "" {
		t.Errorf("first request asked for Range %q", r)
	}
	// The second answer (206 from 300 KiB on) was cut after another
	// 300 KiB.
	for i, want := range []string{"bytes=307200-", "bytes=614400-"} {
		h := s.requests[i+1]
		if h.Get("Range") != want || h.Get("If-Range") != `"v1"` {
			t.Errorf("request %d: Range %q If-Range %q, want %q and the ETag", i+2, h.Get("Range"), h.Get("If-Range"), want)
		}
	}
}

// TestHTTPStartsOverWhenRangeIgnored: a server that answers a resumed
// request with the whole file (200) gets the file written from the start.
func TestHTTPStartsOverWhenRangeIgnored(t *testing.T) {
	s := &cuttingServer{content: randomContent(t, 700<<10), cutAt: 300 << 10, cuts: 1, ignoreRange: true}
	fetchWhole(t, s)
	if len(s.requests) != 2 {
		t.Errorf("%d requests, want 2 (one cut, one whole)", len(s.requests))
	}
}

// TestHTTPGivesUpWithoutProgress: transfers that are cut before a byte
// arrives end after httpResumes attempts with the transport's error.
func TestHTTPGivesUpWithoutProgress(t *testing.T) {
	s := &cuttingServer{content: randomContent(t, 64<<10), cutAt: 0, cuts: 100}
	_, _, err := fetchOne(t, s)
	if err == nil || errors.Is(err, errHTTP) {
		t.Fatalf("err = %v, want the cut transfer's error", err)
	}
	if len(s.requests) != httpResumes {
		t.Errorf("%d requests, want %d", len(s.requests), httpResumes)
	}
}

// TestHTTPStatusNotRetried: an answer other than 200 (or 206 to a range)
// ends the file at once, naming the status.
func TestHTTPStatusNotRetried(t *testing.T) {
	var n int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		http.Error(w, "no such OS", http.StatusNotFound)
	}))
	defer srv.Close()
	d := &httpDL{}
	err := d.one(context.Background(), srv.Client(), srv.URL+"/f", filepath.Join(t.TempDir(), "f"))
	if !errors.Is(err, errHTTP) || !strings.Contains(err.Error(), "404") || n != 1 {
		t.Errorf("err = %v after %d requests, want one request and errHTTP naming 404", err, n)
	}
}
