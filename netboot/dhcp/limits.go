package dhcp

import (
	"sync"
)

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
