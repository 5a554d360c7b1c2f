package dhcp

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// limiter lets one warning per key through per interval, so that a flood of
// bad packets costs a log line every few seconds, with the count of the
// lines it held back.
type limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

func newLimiter(every time.Duration) *limiter {
	return &limiter{every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// warn logs msg at Warn level unless key was logged less than l.every ago.
// Keys are fixed strings chosen by the code, never data from the wire, so
// the maps stay small.
func (l *limiter) warn(log *slog.Logger, key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		l.held[key]++
		l.mu.Unlock()
		return
	}
	l.last[key] = now
	held := l.held[key]
	l.held[key] = 0
	l.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	log.Log(context.Background(), slog.LevelWarn, msg, args...)
}

// seenSet remembers keys (MACs) up to max entries, then starts over, so that
// "log once per MAC" cannot grow without bound under a flood of random MACs.
type seenSet struct {
	mu  sync.Mutex
	m   map[string]struct{}
	max int
}

// first reports whether key was not seen before, and records it.
func (s *seenSet) first(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return false
	}
	if s.m == nil || len(s.m) >= s.max {
		s.m = make(map[string]struct{})
	}
	s.m[key] = struct{}{}
	return true
}

// TOSNetworkControl is the IP TOS byte of DSCP class selector 6, network
// control (RFC 2474, RFC 4594): DHCP replies and the boot API's answers.
const TOSNetworkControl = 48 << 2
