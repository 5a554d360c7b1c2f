// Package logging holds the slog helpers every part of boottorrent shares:
// a warner that lets one line per kind of event through per interval (for
// what hostile or broken machines cause), a handler that drops records
// below a level (for the BitTorrent library's chatter) and a logger that
// discards. It lives under initramfs/ because the boot client links it;
// it imports only the standard library and knows nothing of the server.
package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// OrDiscard returns l, or a logger that discards when l is nil.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// Limiter keeps log lines caused by hostile or broken clients from
// flooding the log: one line per kind of event per interval, with the
// number of lines held back since the last one. It is safe for concurrent
// use.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last map[string]time.Time // keys are fixed kinds chosen by the code, never input
	held map[string]int
}

// NewLimiter returns a Limiter letting one line per kind through every
// every.
func NewLimiter(every time.Duration) *Limiter {
	return &Limiter{every: every, now: time.Now, last: map[string]time.Time{}, held: map[string]int{}}
}

// Warn logs msg at Warn level on log unless kind was logged less than the
// interval ago. Kinds are fixed strings chosen by the code, never data from
// the wire, so the limiter stays small.
func (l *Limiter) Warn(log *slog.Logger, kind, msg string, args ...any) {
	now := l.now()
	l.mu.Lock()
	if t, ok := l.last[kind]; ok && now.Sub(t) < l.every {
		l.held[kind]++
		l.mu.Unlock()
		return
	}
	held := l.held[kind]
	l.last[kind], l.held[kind] = now, 0
	l.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	log.Log(context.Background(), slog.LevelWarn, msg, args...)
}

// MinLevel wraps h so that records below min are dropped.
func MinLevel(h slog.Handler, min slog.Level) slog.Handler { return minLevel{h, min} }

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
