package logging

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLimiter: one line per kind per interval, the next one says how many
// were held back, and kinds do not hold each other back.
func TestLimiter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(1000, 0)
	l := NewLimiter(5 * time.Second)
	l.now = func() time.Time { return now }
	for range 10 {
		l.Warn(log, "a", "bad a")
		l.Warn(log, "b", "bad b")
	}
	now = now.Add(6 * time.Second)
	l.Warn(log, "a", "bad a")
	out := buf.String()
	if n := strings.Count(out, "bad a"); n != 2 {
		t.Errorf("%d lines of kind a, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "bad b"); n != 1 {
		t.Errorf("%d lines of kind b, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "suppressed=9") {
		t.Errorf("the second line of kind a does not say 9 were held back:\n%s", out)
	}
}

func TestMinLevel(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(MinLevel(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), slog.LevelWarn)).With("part", "x")
	log.Info("chatter")
	log.Warn("worth it")
	if strings.Contains(buf.String(), "chatter") || !strings.Contains(buf.String(), `msg="worth it" part=x`) {
		t.Errorf("got %q", buf.String())
	}
	if log.Handler().Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Info enabled below the minimum")
	}
}
