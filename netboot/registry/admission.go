package registry

import (
	"net/netip"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// MaxPerSource bounds the machines one IP address can make the registry
// hold by HTTP alone (boot script, boot API, reports), where any mac= or
// report MAC can be forged: a machine asks from its own address, so a
// real one needs one entry; a few allow for a host that boots VMs behind
// NAT. Machines the server saw on the wire (DHCP, TFTP) are not counted.
const MaxPerSource = 8

// witnessedStage reports whether the server saw stage from the machine's
// own NIC (DHCP, TFTP) rather than over HTTP, where the MAC is whatever
// the request says.
func witnessedStage(stage string) bool {
	return stage == bootapi.StageDHCP || stage == bootapi.StageTFTP
}

// admit returns the entry for mac, creating it unless src (an HTTP
// sender; invalid for DHCP and TFTP) already holds MaxPerSource machines
// the server has not seen on the wire. A flood of forged MACs from one
// address then stops at MaxPerSource and cannot evict real machines.
// Called with r.mu held; nil means refused.
func (r *Registry) admit(mac string, src netip.Addr, witnessed bool, now time.Time) *machine {
	if e, ok := r.byMAC[mac]; ok {
		if witnessed && e.source.IsValid() {
			r.unsource(e)
		}
		return e
	}
	src = src.Unmap()
	if !witnessed && src.IsValid() && r.perSource[src] >= MaxPerSource {
		r.refused++
		if now.Sub(r.refuseLog) >= time.Minute {
			r.log.Warn("ignoring machines announced over HTTP: this address already announced too many that DHCP and TFTP never saw",
				"remote", src, "mac", mac, "max_per_source", MaxPerSource, "refused_total", r.refused)
			r.refuseLog = now
		}
		return nil
	}
	e := r.get(mac, now)
	if !witnessed && src.IsValid() {
		e.source = src
		r.perSource[src]++
	}
	return e
}

// unsource stops counting e against the address that announced it.
func (r *Registry) unsource(e *machine) {
	if n := r.perSource[e.source]; n <= 1 {
		delete(r.perSource, e.source)
	} else {
		r.perSource[e.source] = n - 1
	}
	e.source = netip.Addr{}
}

// victim is the machine a full registry forgets: the one seen least
// recently among those only announced over HTTP, or if there are none,
// among all.
func (r *Registry) victim() string {
	var oldest, oldestHTTP string
	var ot, oh time.Time
	for k, e := range r.byMAC {
		if oldest == "" || e.m.LastSeen.Before(ot) {
			oldest, ot = k, e.m.LastSeen
		}
		if e.source.IsValid() && (oldestHTTP == "" || e.m.LastSeen.Before(oh)) {
			oldestHTTP, oh = k, e.m.LastSeen
		}
	}
	if oldestHTTP != "" {
		return oldestHTTP
	}
	return oldest
}

// Asked records a machine that asked the boot API for its settings from
// ip, without changing its stage; like a report it counts against ip's
// MaxPerSource until DHCP or TFTP sees the machine.
func (r *Registry) Asked(mac string, ip netip.Addr) {
	if mac == "" {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.admit(mac, ip, false, now)
	if e == nil {
		return
	}
	r.setIP(e, ip)
	e.m.LastSeen = now
	if e.m.Stage == "" {
		e.m.Stage = bootapi.StageDHCP
		e.m.Stages[bootapi.StageDHCP] = now
	}
}
