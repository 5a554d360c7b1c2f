package bench

import (
	"errors"
	"math"
	"sort"
)

// Links are the capacities of the emulated LAN in bits per second.
type Links struct {
	ServerUp   float64
	ClientDown []float64
	ClientUp   []float64
}

// ErrNoLinks is returned by Bound when a capacity is missing or not
// positive.
var ErrNoLinks = errors.New("bound: every link needs a positive rate and there must be at least one client")

// Bound is the fluid lower bound, in seconds, on the time until all N
// clients hold an image of size bytes when the server starts with the only
// copy and clients may forward data to each other as soon as they have it:
//
//	T* = max(S/u_server, S/d_min, N·S/(u_server + Σ u_clients))
//
// The server must send every byte at least once, the slowest client must
// receive every byte, and all N copies must cross some uplink. (Kumar and
// Ross, "Peer-assisted file distribution: the minimum distribution time",
// 2006.) Protocol overhead is ignored, so no real transfer reaches 1.0.
func Bound(size int64, l Links) (float64, error) {
	n := len(l.ClientDown)
	if n == 0 || len(l.ClientUp) != n || l.ServerUp <= 0 || size <= 0 {
		return 0, ErrNoLinks
	}
	s := float64(size) * 8
	dMin := math.Inf(1)
	sumUp := l.ServerUp
	for i := range n {
		if l.ClientDown[i] <= 0 || l.ClientUp[i] < 0 {
			return 0, ErrNoLinks
		}
		dMin = min(dMin, l.ClientDown[i])
		sumUp += l.ClientUp[i]
	}
	return max(s/l.ServerUp, s/dMin, float64(n)*s/sumUp), nil
}

// BoundHTTP is the lower bound when clients cannot help each other (plain
// HTTP from the server): max(N·S/u_server, S/d_min).
func BoundHTTP(size int64, l Links) (float64, error) {
	n := len(l.ClientDown)
	if n == 0 || l.ServerUp <= 0 || size <= 0 {
		return 0, ErrNoLinks
	}
	s := float64(size) * 8
	dMin := math.Inf(1)
	for _, d := range l.ClientDown {
		if d <= 0 {
			return 0, ErrNoLinks
		}
		dMin = min(dMin, d)
	}
	return max(float64(n)*s/l.ServerUp, s/dMin), nil
}

// Spread is the minimum, median and maximum of per-client times.
type Spread struct {
	Min, Median, Max float64
}

// SpreadOf returns the spread of xs (zero for none). The median of an even
// count is the mean of the two middle values.
func SpreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Min: s[0], Median: m, Max: s[len(s)-1]}
}
