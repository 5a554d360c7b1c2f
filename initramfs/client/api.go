package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// Limits on what the server may send: the client trusts nothing from the
// network, not even its own server, to stay bounded.
const (
	maxBootBytes    = 1 << 20 // a Boot document with a large menu
	maxPeersBytes   = 256 << 10
	maxTorrentBytes = 16 << 20 // metainfo of a multi-GB image with small pieces
	maxMenuItems    = 99
	maxPeers        = 200
	maxReportMS     = 60_000 // a longer report interval is ignored
)

// api talks to the server's HTTP listener.
type api struct {
	base string // http://IP:PORT, no trailing slash
	mac  string
	hc   *http.Client
	// attempts are the time limits of get's attempts (defaultAttempts;
	// tests shorten them).
	attempts []time.Duration

	peersMu   sync.Mutex
	peersLast map[string]cachedPeers // by OS name
}

func newAPI(base, mac string) (*api, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an http://HOST:PORT URL", base)
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 15 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       60 * time.Second,
	}
	return &api{base: strings.TrimRight(base, "/"), mac: mac, hc: &http.Client{Transport: tr}, attempts: defaultAttempts}, nil
}

// host is the server's IP, used to tell the seeder's bytes from peers'.
func (a *api) host() string {
	u, err := url.Parse(a.base)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// errHTTP is an answer other than 200.
var errHTTP = errors.New("unexpected HTTP status")

// defaultAttempts are the time limits of get's attempts (a connection
// whose attempt timed out is dropped, so the next starts afresh). The
// answers are a few KiB, but they share the server's uplink with the seeder's bulk data: when their packets are lost, TCP
// waits twice as long after each loss, and a single 30 s attempt sometimes
// ran out. At N = 100 (8 MiB, 4 Mbit/s) 2–5 machines per run failed to
// get the .torrent that way and started their download 32 s late, 10–17 s
// after the median machine had finished (cmd/swarmbench/TUNING.md).
var defaultAttempts = []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second}

// get fetches path with up to len(a.attempts) attempts; an HTTP status
// other than 200 or an oversized answer ends it at once.
func (a *api) get(ctx context.Context, path string, q url.Values, limit int64) ([]byte, error) {
	b, _, _, err := a.getCond(ctx, path, q, limit, "")
	return b, err
}

// getCond is get with an ETag from an earlier answer (if not ""): an
// unchanged answer comes back as notModified, without a body. tag is the
// answer's ETag.
func (a *api) getCond(ctx context.Context, path string, q url.Values, limit int64, etag string) (b []byte, tag string, notModified bool, err error) {
	for _, limitT := range a.attempts {
		b, tag, notModified, err = a.getOnce(ctx, limitT, path, q, limit, etag)
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return b, tag, notModified, err
		}
	}
	return nil, "", false, err
}

// retryable says whether a failed get may succeed on a new connection: a
// timeout or a network error, not an answer.
func retryable(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF)
}

func (a *api) getOnce(ctx context.Context, timeout time.Duration, path string, q url.Values, limit int64, etag string) ([]byte, string, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := a.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", false, err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, "", false, err
	}
	defer resp.Body.Close()
	tag := resp.Header.Get("ETag")
	if etag != "" && resp.StatusCode == http.StatusNotModified {
		return nil, tag, true, nil
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, "", false, fmt.Errorf("GET %s: %w %s: %s", path, errHTTP, resp.Status, bytes.TrimSpace(msg))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", false, fmt.Errorf("GET %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, "", false, fmt.Errorf("GET %s: answer larger than %d bytes", path, limit)
	}
	return b, tag, false, nil
}

// Boot fetches the menu and this machine's settings.
func (a *api) Boot(ctx context.Context) (*bootapi.Boot, error) {
	b, err := a.get(ctx, bootapi.PathBoot, url.Values{"mac": {a.mac}}, maxBootBytes)
	if err != nil {
		return nil, err
	}
	return parseBoot(b)
}

// parseBoot decodes and checks a Boot document from the network.
func parseBoot(b []byte) (*bootapi.Boot, error) {
	var boot bootapi.Boot
	if err := json.Unmarshal(b, &boot); err != nil {
		return nil, fmt.Errorf("boot answer: %w", err)
	}
	if len(boot.Menu) == 0 {
		return nil, errors.New("boot answer: the menu is empty (no OS is configured or none could be hashed yet)")
	}
	if len(boot.Menu) > maxMenuItems {
		boot.Menu = boot.Menu[:maxMenuItems]
	}
	for i := range boot.Menu {
		o := &boot.Menu[i]
		if !validName(o.Name) {
			return nil, fmt.Errorf("boot answer: OS name %q is not a safe name", o.Name)
		}
		o.DispName = printable(o.DispName, 80)
		if o.DispName == "" {
			o.DispName = o.Name
		}
		for _, p := range append([]string{o.Kernel, o.Initrd, o.Bin}, o.Files...) {
			if p != "" && !validRel(p) {
				return nil, fmt.Errorf("boot answer: OS %s: file %q leaves its folder", o.Name, p)
			}
		}
	}
	if boot.ReportMS <= 0 || boot.ReportMS > maxReportMS {
		boot.ReportMS = 3000
	}
	if boot.SeedMS < 0 || boot.SeedMS > int64(24*time.Hour/time.Millisecond) {
		boot.SeedMS = 0
	}
	return &boot, nil
}

// Peers fetches the addresses to dial for an OS (the seeder first) and
// this machine's share of the seeder's pieces. It asks with the ETag of
// the last answer and reuses that answer when the server says it has not
// changed (a 304 costs the server's uplink a few header bytes).
func (a *api) Peers(ctx context.Context, osName string) (*bootapi.Peers, error) {
	a.peersMu.Lock()
	last := a.peersLast[osName]
	a.peersMu.Unlock()
	b, tag, notModified, err := a.getCond(ctx, bootapi.PathPeers, url.Values{"os": {osName}, "mac": {a.mac}}, maxPeersBytes, last.etag)
	if err != nil {
		return nil, err
	}
	if notModified {
		return clonePeers(last.p), nil
	}
	p, err := parsePeers(b)
	if err != nil {
		return nil, err
	}
	a.peersMu.Lock()
	if a.peersLast == nil {
		a.peersLast = map[string]cachedPeers{}
	}
	if tag != "" && len(tag) <= maxETagBytes {
		a.peersLast[osName] = cachedPeers{tag, clonePeers(p)}
	} else {
		delete(a.peersLast, osName)
	}
	a.peersMu.Unlock()
	return p, nil
}

// cachedPeers is the last Peers answer for an OS and its ETag.
type cachedPeers struct {
	etag string
	p    *bootapi.Peers
}

// maxETagBytes bounds the ETag kept from the server (ours are 18 bytes).
const maxETagBytes = 128

func clonePeers(p *bootapi.Peers) *bootapi.Peers {
	c := *p
	c.Peers = slices.Clone(p.Peers)
	return &c
}

// parsePeers decodes a Peers answer, keeping only well-formed ip:port and
// a share that makes sense (else none: the whole torrent from anyone).
func parsePeers(b []byte) (*bootapi.Peers, error) {
	var p bootapi.Peers
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("peers answer: %w", err)
	}
	out := &bootapi.Peers{Peers: []string{}}
	for _, s := range p.Peers {
		if len(out.Peers) == maxPeers {
			break
		}
		if ap, err := parseAddrPort(s); err == nil {
			out.Peers = append(out.Peers, ap)
		}
	}
	if p.ShareCount > 1 && p.ShareCount <= bootapi.MaxShareCount && p.ShareIndex >= 0 && p.ShareIndex < p.ShareCount {
		out.ShareIndex, out.ShareCount = p.ShareIndex, p.ShareCount
		if p.ShareOwners > 0 && p.ShareOwners <= bootapi.MaxShareCount {
			out.ShareOwners = p.ShareOwners
		}
	}
	if p.ReportMS > 0 && p.ReportMS <= maxReportMS {
		out.ReportMS = p.ReportMS
	}
	return out, nil
}

// Torrent fetches an OS's metainfo.
func (a *api) Torrent(ctx context.Context, o *bootapi.OS) ([]byte, error) {
	p := o.Torrent
	if p == "" || !strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
		p = bootapi.PathTorrents + o.Name + ".torrent"
	}
	return a.get(ctx, p, nil, maxTorrentBytes)
}

// Report posts progress; errors are returned for the caller to log once.
func (a *api) Report(ctx context.Context, r *bootapi.Report) error {
	r.MAC = a.mac
	if len(r.Message) > 1024 {
		r.Message = r.Message[:1024]
	}
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+bootapi.PathReport, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %w %s", bootapi.PathReport, errHTTP, resp.Status)
	}
	return nil
}

// WebSeedURL is the plain-HTTP address of one file of an OS.
func (a *api) WebSeedURL(osName, file string) string {
	return a.base + bootapi.PathWebSeed + osName + "/" + (&url.URL{Path: file}).EscapedPath()
}

func validName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return !strings.HasSuffix(s, ".")
}

func validRel(p string) bool {
	if p == "" || len(p) > 1024 || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\x00\\") {
		return false
	}
	for _, e := range strings.Split(p, "/") {
		if e == "" || e == "." || e == ".." {
			return false
		}
	}
	return true
}

// printable keeps a display string from the network from moving the
// cursor or changing the console's state: control characters are dropped.
func printable(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\uFFFD' {
			continue
		}
		if n == max {
			break
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

func parseAddrPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() || ip.IsMulticast() {
		return "", fmt.Errorf("bad peer ip %q", host)
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p <= 0 || p > 65535 || fmt.Sprint(p) != port {
		return "", fmt.Errorf("bad peer port %q", port)
	}
	return net.JoinHostPort(ip.String(), port), nil
}
