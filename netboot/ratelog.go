package netboot

import (
	"log/slog"
	"sync"
	"time"
)

// rateLog keeps log lines caused by hostile or broken clients from
// flooding the log: one line per kind of event per interval, with the
// number of events suppressed since the last line.
type rateLog struct {
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time // keys are fixed event kinds, never input
	supp map[string]int
}

func newRateLog(every time.Duration) *rateLog {
	return &rateLog{every: every, last: map[string]time.Time{}, supp: map[string]int{}}
}

// warn logs msg at Warn level unless kind was logged less than every ago.
func (r *rateLog) warn(log *slog.Logger, kind, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if t, ok := r.last[kind]; ok && now.Sub(t) < r.every {
		r.supp[kind]++
		r.mu.Unlock()
		return
	}
	n := r.supp[kind]
	r.last[kind], r.supp[kind] = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Warn(msg, args...)
}
