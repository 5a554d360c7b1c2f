package bench

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ParseSize reads an image size such as "32MiB", "4MiB", "1GiB", "500MB"
// or "1048576". Binary units (KiB, MiB, GiB, and the shorthands K, M, G)
// are powers of 1024; KB, MB, GB are powers of 1000.
func ParseSize(s string) (int64, error) {
	num, unit, err := numberUnit("size", s, strings.TrimSpace(s), "32MiB")
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	}[strings.ToLower(strings.TrimSpace(unit))]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q; use B, KiB, MiB, GiB, KB, MB or GB", s, unit)
	}
	v := num * mult
	if v < 1 || v > 1<<40 || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: must be between 1 byte and 1 TiB", s)
	}
	return int64(v), nil
}

// numberUnit splits t, the trimmed form of the option value s, into the
// decimal number it starts with and the unit after it; what names the
// option and example shows a valid value in the error.
func numberUnit(what, s, t, example string) (float64, string, error) {
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	if i == 0 {
		return 0, "", fmt.Errorf("%s %q: must start with a number, e.g. %s", what, s, example)
	}
	num, err := strconv.ParseFloat(t[:i], 64)
	if err != nil {
		return 0, "", fmt.Errorf("%s %q: %v", what, s, err)
	}
	return num, t[i:], nil
}

// ParseRate reads a link rate the way tc(8) writes it and returns bits per
// second: "20mbit", "512kbit", "1gbit", "100bit"; "bps", "kbps", "mbps",
// "gbps" are bytes per second, as in tc. A bare number is bits per second.
func ParseRate(s string) (float64, error) {
	num, unit, err := numberUnit("rate", s, strings.ToLower(strings.TrimSpace(s)), "20mbit")
	if err != nil {
		return 0, err
	}
	mult, ok := map[string]float64{
		"": 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
		"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,
	}[unit]
	if !ok {
		return 0, fmt.Errorf("rate %q: unknown unit %q; use kbit, mbit or gbit (bits/s) or kbps, mbps (bytes/s, as tc does)", s, unit)
	}
	v := num * mult
	if v < 8e3 || v > 100e9 {
		return 0, fmt.Errorf("rate %q: must be between 8kbit and 100gbit", s)
	}
	return v, nil
}

// ParseLoss reads a packet loss probability: "1%", "0.5%", "0" or "1"
// (a bare number is a percentage, as tc writes it). It returns a fraction.
func ParseLoss(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "%")
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("loss %q: use a percentage such as 1%%", s)
	}
	if v < 0 || v >= 50 {
		return 0, fmt.Errorf("loss %q: must be at least 0%% and below 50%%", s)
	}
	return v / 100, nil
}

// ParseLatency reads a round-trip latency as a Go duration ("2ms", "0").
func ParseLatency(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("latency %q: use a duration such as 2ms", s)
	}
	if d < 0 || d > 10*time.Second {
		return 0, fmt.Errorf("latency %q: must be between 0 and 10s", s)
	}
	return d, nil
}

// MaxClients bounds --clients: every client is a namespace, two veth ends,
// four qdiscs and two processes.
const MaxClients = 250

// ParseClients reads a list of client counts such as "1,10,20" and returns
// it sorted without duplicates.
func ParseClients(s string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > MaxClients {
			return nil, fmt.Errorf("clients %q: each count must be a whole number from 1 to %d", f, MaxClients)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("clients: give at least one count, e.g. --clients 1,10,20")
	}
	sort.Ints(out)
	return out, nil
}

// FormatBytes writes n with a binary unit, e.g. "32.0 MiB".
func FormatBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(n) >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

// FormatRate writes bits/s as tc reads it, e.g. "20mbit".
func FormatRate(bps float64) string {
	switch {
	case bps >= 1e9 && math.Mod(bps, 1e9) == 0:
		return fmt.Sprintf("%.0fgbit", bps/1e9)
	case bps >= 1e6 && math.Mod(bps, 1e6) == 0:
		return fmt.Sprintf("%.0fmbit", bps/1e6)
	case bps >= 1e3 && math.Mod(bps, 1e3) == 0:
		return fmt.Sprintf("%.0fkbit", bps/1e3)
	}
	return fmt.Sprintf("%.0fbit", bps)
}
