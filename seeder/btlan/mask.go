package btlan

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// MaskExtension is the BitTorrent extension (BEP 10) by which a boot
// client asks the seeder, on an open connection, to say again what it
// has: the seeder answers each such message with an empty one of its own
// (AnswerMaskRequests), and the client reads the answer as a Bitfield of
// the pieces it may ask the seeder for (MaskedBitfield). Without it,
// changing those pieces meant closing the connection and dialling again,
// which threw away the requests in flight.
const MaskExtension = "boottorrent_mask"

// AdvertiseMask is a PeerConnAdded callback: the connection offers
// MaskExtension. It changes a copy of the library's list of extensions,
// which all connections share.
func AdvertiseMask(pc *torrent.PeerConn) {
	m := &torrent.LocalLtepProtocolMap{Index: slices.Clone(pc.LocalLtepProtocolMap.Index), NumBuiltin: pc.LocalLtepProtocolMap.NumBuiltin}
	m.AddUserProtocol(MaskExtension)
	pc.LocalLtepProtocolMap = m
}

// AnswerMaskRequests is the seeder's half: a client configured with cfg
// advertises MaskExtension on every connection and answers its messages
// with an empty one. The payload is ignored. Requests that arrive while a
// connection's answer is being written get one more answer after it (the
// client only needs one answer after its latest request): a peer that
// sends many gets at most as many answers, a few bytes each, and holds at
// most one writing goroutine.
func AnswerMaskRequests(cfg *torrent.ClientConfig) {
	var pending sync.Map // *torrent.PeerConn → *atomic.Int32, requests not yet answered
	cfg.Callbacks.PeerConnAdded = append(cfg.Callbacks.PeerConnAdded, AdvertiseMask)
	cfg.Callbacks.PeerConnReadExtensionMessage = append(cfg.Callbacks.PeerConnReadExtensionMessage, func(ev torrent.PeerConnReadExtensionMessageEvent) {
		pc := ev.PeerConn
		if name, _, err := pc.LocalLtepProtocolMap.LookupId(ev.ExtensionNumber); err != nil || name != MaskExtension {
			return
		}
		v, _ := pending.LoadOrStore(pc, new(atomic.Int32))
		n := v.(*atomic.Int32)
		if n.Add(1) > 1 {
			return // the writer below answers it
		}
		// The callback runs with the library's lock held, and writing
		// takes it.
		go func() {
			for {
				k := n.Load()
				if pc.WriteExtendedMessage(MaskExtension, nil) != nil || n.Add(-k) == 0 {
					pending.Delete(pc)
					return
				}
			}
		}()
	})
}

// RequestMask is the client's half, sending: it asks the seeder on pc to
// say again what it has. An error means the seeder does not support
// MaskExtension (or the connection is gone).
func RequestMask(pc *torrent.PeerConn) error { return pc.WriteExtendedMessage(MaskExtension, nil) }

// MaskMessage is the client's half, receiving: it rewrites a message m
// from the seeder on pc before the library reads it, so that the seeder
// seems to have only the pieces of mask (nil: every piece; np pieces in
// all). A Bitfield or HaveAll is cut down to the mask (a Bitfield only to
// pieces the seeder really has), and an answer to RequestMask becomes a
// Bitfield of the mask. It runs with the library's lock held, so it must
// not call into the client.
func MaskMessage(pc *torrent.PeerConn, m *pp.Message, mask []bool, np int) {
	if m.Type == pp.Extended && m.ExtendedID != pp.HandshakeExtendedID {
		if name, _, err := pc.LocalLtepProtocolMap.LookupId(m.ExtendedID); err == nil && name == MaskExtension {
			*m = pp.Message{Type: pp.Bitfield, Bitfield: maskOrAll(mask, np)}
		}
		return
	}
	if m.Type != pp.Bitfield && m.Type != pp.HaveAll || mask == nil {
		return
	}
	bf := slices.Clone(mask)
	if m.Type == pp.Bitfield {
		// Advertise only what the seeder really has.
		for i := range bf {
			bf[i] = bf[i] && i < len(m.Bitfield) && m.Bitfield[i]
		}
	}
	m.Type, m.Bitfield = pp.Bitfield, bf
}

// maskOrAll is mask as a Bitfield message carries it, or every piece of
// np when mask is nil.
func maskOrAll(mask []bool, np int) []bool {
	if mask != nil {
		return slices.Clone(mask)
	}
	bf := make([]bool, (np+7)/8*8)
	for i := range np {
		bf[i] = true
	}
	return bf
}
