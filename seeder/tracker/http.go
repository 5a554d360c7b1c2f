package tracker

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/anacrolix/torrent/bencode"
)

// MaxQueryBytes bounds an announce or scrape query string. A real client's
// announce is about 300 bytes; a scrape of MaxScrapeHashes is under 4 KiB.
const MaxQueryBytes = 4096

// MaxScrapeHashes bounds the info hashes of one scrape (BEP 48 leaves the
// limit to the tracker; we only ever have a handful of OSes).
const MaxScrapeHashes = 64

// ParseAnnounceQuery parses an HTTP announce's raw query (BEP 3). The
// peer's address is from (the connection's remote address); the "ip"
// parameter is ignored, so a client cannot register someone else. It also
// returns whether the client asked for a compact reply (BEP 23) and for no
// peer ids.
func ParseAnnounceQuery(rawQuery string, from netip.Addr) (req AnnounceRequest, compact, noPeerID bool, err error) {
	if len(rawQuery) > MaxQueryBytes {
		return req, false, false, fmt.Errorf("%w: query longer than %d bytes", ErrBadRequest, MaxQueryBytes)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return req, false, false, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	one := func(k string) (string, error) {
		v := q[k]
		if len(v) > 1 {
			return "", fmt.Errorf("%w: %s given %d times", ErrBadRequest, k, len(v))
		}
		if len(v) == 0 {
			return "", nil
		}
		return v[0], nil
	}
	// id20 reads a 20-byte binary key (the info hash, the peer ID).
	id20 := func(k string, dst *[20]byte) error {
		v, err := one(k)
		if err != nil {
			return err
		}
		if len(v) != 20 {
			return fmt.Errorf("%w: %s must be 20 bytes, got %d", ErrBadRequest, k, len(v))
		}
		copy(dst[:], v)
		return nil
	}
	if err := id20("info_hash", (*[20]byte)(&req.InfoHash)); err != nil {
		return req, false, false, err
	}
	if err := id20("peer_id", &req.PeerID); err != nil {
		return req, false, false, err
	}
	ps, err := one("port")
	if err != nil {
		return req, false, false, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return req, false, false, fmt.Errorf("%w: port %q", ErrBadRequest, ps)
	}
	if !from.IsValid() {
		return req, false, false, fmt.Errorf("%w: no source address", ErrBadRequest)
	}
	req.Addr = netip.AddrPortFrom(from.Unmap(), uint16(port))
	for _, f := range []struct {
		key      string
		dst      *int64
		required bool
	}{{"uploaded", &req.Uploaded, false}, {"downloaded", &req.Downloaded, false}, {"left", &req.Left, true}} {
		s, err := one(f.key)
		if err != nil {
			return req, false, false, err
		}
		if s == "" {
			if f.required {
				return req, false, false, fmt.Errorf("%w: %s missing", ErrBadRequest, f.key)
			}
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return req, false, false, fmt.Errorf("%w: %s %q", ErrBadRequest, f.key, s)
		}
		*f.dst = v
	}
	ev, err := one("event")
	if err != nil {
		return req, false, false, err
	}
	switch ev {
	case "", "empty", "paused":
		req.Event = EventNone
	case "started":
		req.Event = EventStarted
	case "completed":
		req.Event = EventCompleted
	case "stopped":
		req.Event = EventStopped
	default:
		return req, false, false, fmt.Errorf("%w: event %q", ErrBadRequest, ev)
	}
	req.NumWant = -1
	if s, err := one("numwant"); err != nil {
		return req, false, false, err
	} else if s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return req, false, false, fmt.Errorf("%w: numwant %q", ErrBadRequest, s)
		}
		req.NumWant = n
	}
	c, err := one("compact")
	if err != nil {
		return req, false, false, err
	}
	npi, err := one("no_peer_id")
	if err != nil {
		return req, false, false, err
	}
	return req, c == "1", npi == "1", nil
}

// ParseScrapeQuery returns the info hashes of a scrape query (BEP 48).
func ParseScrapeQuery(rawQuery string) ([]Hash, error) {
	if len(rawQuery) > MaxQueryBytes {
		return nil, fmt.Errorf("%w: query longer than %d bytes", ErrBadRequest, MaxQueryBytes)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	vs := q["info_hash"]
	if len(vs) > MaxScrapeHashes {
		return nil, fmt.Errorf("%w: more than %d info hashes", ErrBadRequest, MaxScrapeHashes)
	}
	out := make([]Hash, 0, len(vs))
	for _, v := range vs {
		if len(v) != 20 {
			return nil, fmt.Errorf("%w: info_hash must be 20 bytes, got %d", ErrBadRequest, len(v))
		}
		out = append(out, Hash([]byte(v)))
	}
	return out, nil
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// AnnounceHandler serves GET /announce.
func (t *Tracker) AnnounceHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		src := remoteAddr(r)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		if !t.Allow(src) {
			t.cfg.Logger.Debug("tracker: announce rate limited", "src", src)
			writeFailure(w, ErrRateLimited.Error())
			return
		}
		t.announcesHTTP.Add(1)
		req, compact, noPeerID, err := ParseAnnounceQuery(r.URL.RawQuery, src)
		if err != nil {
			t.cfg.Logger.Info("tracker: bad announce", "src", src, "proto", "http", "err", err)
			writeFailure(w, err.Error())
			return
		}
		resp, err := t.Announce(req)
		if err != nil {
			t.cfg.Logger.Info("tracker: announce refused", "src", src, "proto", "http", "info_hash", hex.EncodeToString(req.InfoHash[:]), "err", err)
			writeFailure(w, err.Error())
			return
		}
		body := map[string]any{
			"interval":     int64(resp.Interval / time.Second),
			"min interval": int64(resp.MinInterval / time.Second),
			"complete":     resp.Seeders,
			"incomplete":   resp.Leechers,
		}
		if compact {
			var v4, v6 bytes.Buffer
			for _, p := range resp.Peers {
				a := p.Addr.Addr().Unmap()
				if a.Is4() {
					v4.Write(compactPeer(a, p.Addr.Port()))
				} else {
					v6.Write(compactPeer(a, p.Addr.Port()))
				}
			}
			body["peers"] = v4.Bytes()
			if v6.Len() > 0 {
				body["peers6"] = v6.Bytes()
			}
		} else {
			list := make([]map[string]any, 0, len(resp.Peers))
			for _, p := range resp.Peers {
				d := map[string]any{"ip": p.Addr.Addr().Unmap().String(), "port": int(p.Addr.Port())}
				if !noPeerID && p.ID != ([20]byte{}) {
					d["peer id"] = p.ID[:]
				}
				list = append(list, d)
			}
			body["peers"] = list
		}
		t.cfg.Logger.Debug("tracker: announce", "src", req.Addr, "proto", "http", "info_hash", hex.EncodeToString(req.InfoHash[:]),
			"event", req.Event.String(), "left", req.Left, "peers", len(resp.Peers), "duration", time.Since(start))
		writeBencode(w, body)
	})
}

// ScrapeHandler serves GET /scrape (BEP 48).
func (t *Tracker) ScrapeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := remoteAddr(r)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		if !t.Allow(src) {
			writeFailure(w, ErrRateLimited.Error())
			return
		}
		ihs, err := ParseScrapeQuery(r.URL.RawQuery)
		if err != nil {
			t.cfg.Logger.Info("tracker: bad scrape", "src", src, "err", err)
			writeFailure(w, err.Error())
			return
		}
		files := map[string]any{}
		for ih, s := range t.Scrape(ihs) {
			files[string(ih[:])] = map[string]any{"complete": s.Complete, "incomplete": s.Incomplete, "downloaded": s.Downloaded}
		}
		writeBencode(w, map[string]any{"files": files})
	})
}

func writeFailure(w http.ResponseWriter, reason string) {
	writeBencode(w, map[string]any{"failure reason": reason})
}

func writeBencode(w http.ResponseWriter, v any) {
	b, err := bencode.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// IsBadRequest reports whether err is the client's fault.
func IsBadRequest(err error) bool { return errors.Is(err, ErrBadRequest) }

// compactPeer is BEP 23's form: the address bytes, then the port in
// network byte order. (netip.AddrPort.MarshalBinary writes the port
// little-endian, so it cannot be used.)
func compactPeer(a netip.Addr, port uint16) []byte {
	return binary.BigEndian.AppendUint16(a.AsSlice(), port)
}
