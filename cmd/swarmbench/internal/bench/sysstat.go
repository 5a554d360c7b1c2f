package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cpuTimes are the aggregate jiffies of /proc/stat's first line.
type cpuTimes struct{ busy, steal, total uint64 }

// parseProcStat reads the "cpu " line of /proc/stat. idle and iowait count
// as not busy; steal counts as busy (the host took the core from us) and
// is also kept apart: on a shared host it says how much of the machine
// other guests took.
func parseProcStat(data []byte) (cpuTimes, error) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var t cpuTimes
		for i, s := range f[1:] {
			if i >= 8 { // guest and guest_nice are already in user and nice
				break
			}
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("/proc/stat: %q: %v", s, err)
			}
			t.total += v
			if i != 3 && i != 4 { // idle, iowait
				t.busy += v
			}
			if i == 7 {
				t.steal = v
			}
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("/proc/stat: no cpu line")
}

// parseMemUsed returns MemTotal − MemAvailable from /proc/meminfo, in bytes.
func parseMemUsed(data []byte) (used, total int64, err error) {
	var avail int64 = -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			avail = v * 1024
		}
	}
	if total == 0 || avail < 0 {
		return 0, 0, fmt.Errorf("/proc/meminfo: no MemTotal or MemAvailable")
	}
	return total - avail, total, nil
}

// Sampler watches the machine's CPU and memory while a case runs.
type Sampler struct {
	mu       sync.Mutex
	peakBusy float64
	sumBusy  float64
	sumSteal float64
	n        int
	peakMem  int64
	stop     context.CancelFunc
	done     chan struct{}
}

// StartSampler samples /proc/stat and /proc/meminfo every interval until
// Stop. Busy is measured over each interval, so a short spike of a single
// process does not count as a saturated machine.
func StartSampler(interval time.Duration) *Sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		prev, _ := readCPU()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			cur, err := readCPU()
			if err == nil && cur.total > prev.total {
				busy := float64(cur.busy-prev.busy) / float64(cur.total-prev.total)
				steal := float64(cur.steal-prev.steal) / float64(cur.total-prev.total)
				s.mu.Lock()
				s.peakBusy = max(s.peakBusy, busy)
				s.sumBusy += busy
				s.sumSteal += steal
				s.n++
				s.mu.Unlock()
			}
			prev = cur
			if data, err := os.ReadFile("/proc/meminfo"); err == nil {
				if used, _, err := parseMemUsed(data); err == nil {
					s.mu.Lock()
					s.peakMem = max(s.peakMem, used)
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

func readCPU() (cpuTimes, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseProcStat(data)
}

// Stop ends sampling and returns the peak and mean busy fraction and the
// peak memory in use.
func (s *Sampler) Stop() (peak, mean float64, mem int64) {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n > 0 {
		mean = s.sumBusy / float64(s.n)
	}
	return s.peakBusy, mean, s.peakMem
}

// Steal is the mean fraction of all cores the host took from this machine
// (steal time) while sampling; call it after Stop.
func (s *Sampler) Steal() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return 0
	}
	return s.sumSteal / float64(s.n)
}

// ThisMachine describes the machine for the report.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		_, m.MemBytes, _ = parseMemUsed(data)
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}
