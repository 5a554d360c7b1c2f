package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// httpDL is the baseline: the same files over plain HTTP from the web
// seed, one after another (what every machine did before BitTorrent).
type httpDL struct {
	dir    string
	total  int64
	done   atomic.Int64
	last   atomic.Int64
	errc   chan error
	cancel context.CancelFunc
}

func startHTTP(ctx context.Context, a *api, o *bootapi.OS, dataDir string) (*httpDL, error) {
	d := &httpDL{dir: filepath.Join(dataDir, o.Name), total: o.Size, errc: make(chan error, 1)}
	d.last.Store(time.Now().UnixNano())
	ctx, d.cancel = context.WithCancel(ctx)
	go func() { d.errc <- d.run(ctx, a, o) }()
	return d, nil
}

func (d *httpDL) run(ctx context.Context, a *api, o *bootapi.OS) error {
	for _, f := range o.Files {
		if err := d.one(ctx, a.hc, a.WebSeedURL(o.Name, f), filepath.Join(d.dir, filepath.FromSlash(f))); err != nil {
			return fmt.Errorf("web seed %s: %w", f, err)
		}
	}
	return nil
}

// httpResumes is how many times in a row one file's transfer may be cut
// short without a byte of progress before httpDL gives up (and the
// machine starts the stage over); httpResumePause is the wait before each
// resumption.
const (
	httpResumes     = 3
	httpResumePause = time.Second
)

// one fetches url into dst. A transfer cut short goes on from where it
// stopped with a Range request (If-Range: the ETag of the first answer),
// as wget -c or curl -C - would: on a slow link shared by many machines
// TCP can starve one transfer long enough for the server to drop it as
// idle (the web seed's IdleTimeout, 30 s), and starting the file over
// would make the baseline slower than plain HTTP is.
func (d *httpDL) one(ctx context.Context, hc *http.Client, url, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	var off int64
	etag := ""
	for stuck := 0; ; {
		before := off
		err := d.fetch(ctx, hc, url, f, &off, &etag)
		if err == nil {
			return f.Close()
		}
		if off > before {
			stuck = 0
		} else {
			stuck++
		}
		if ctx.Err() != nil || errors.Is(err, errHTTP) || stuck >= httpResumes {
			f.Close()
			return err
		}
		select {
		case <-time.After(httpResumePause):
		case <-ctx.Done():
			f.Close()
			return ctx.Err()
		}
	}
}

// fetch asks for url from *off on (the whole file at 0) and writes what
// comes at its offset in f, advancing *off. A server that answers a range
// request with the whole file (it ignores ranges, or the file changed
// since *etag) starts the file over.
func (d *httpDL) fetch(ctx context.Context, hc *http.Client, url string, f *os.File, off *int64, etag *string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if *off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", *off))
		if *etag != "" {
			req.Header.Set("If-Range", *etag)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		if *off > 0 {
			if err := f.Truncate(0); err != nil {
				return err
			}
			d.done.Add(-*off)
			*off = 0
		}
		*etag = resp.Header.Get("ETag")
	case resp.StatusCode == http.StatusPartialContent && *off > 0:
		if want := fmt.Sprintf("bytes %d-", *off); !strings.HasPrefix(resp.Header.Get("Content-Range"), want) {
			return fmt.Errorf("%w: asked for bytes from %d, got Content-Range %.60q", errHTTP, *off, resp.Header.Get("Content-Range"))
		}
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("%w %s: %s", errHTTP, resp.Status, bytes.TrimSpace(msg))
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := f.WriteAt(buf[:n], *off); err != nil {
				return err
			}
			*off += int64(n)
			d.done.Add(int64(n))
			d.last.Store(time.Now().UnixNano())
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (d *httpDL) Wait(ctx context.Context) (*Fetched, error) {
	select {
	case err := <-d.errc:
		if err != nil {
			return nil, err
		}
		return &Fetched{Dir: d.dir, Bytes: d.done.Load()}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *httpDL) Progress() Progress {
	p := Progress{Total: d.total, Done: d.done.Load(), FromWeb: d.done.Load()}
	if p.Done < p.Total {
		p.Stalled = time.Since(time.Unix(0, d.last.Load()))
	}
	return p
}

func (d *httpDL) Seed(context.Context, time.Duration) {}

func (d *httpDL) Close() { d.cancel() }
