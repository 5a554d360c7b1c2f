// Package utp stands in for github.com/anacrolix/go-utp (see go.mod): it
// has the names anacrolix/torrent uses, and every socket constructor
// returns ErrNotBuilt. boottorrent sets DisableUTP everywhere, so the
// library never calls them; if a future change enabled uTP, the client
// would fail to start with this error instead of silently running
// without it.
package utp

import (
	"context"
	"errors"
	"log/slog"
	"net"
)

// Default names the implementation in the library's error messages.
const Default = "uTP (not built into boottorrent)"

// ErrNotBuilt is what every constructor returns.
var ErrNotBuilt = errors.New("uTP is not built into boottorrent: set DisableUTP")

// FirewallCallback decides whether to accept a connection from an address.
type FirewallCallback func(net.Addr) bool

// Option configures a socket; there is no socket to configure here.
type Option struct{}

// WithLogger exists because the library passes its logger; it is unused.
func WithLogger(*slog.Logger) Option { return Option{} }

// Socket is the uTP socket the library expects.
type Socket interface {
	net.PacketConn
	Accept() (net.Conn, error)
	Addr() net.Addr
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	SetFirewallCallback(FirewallCallback)
}

// NewSocket returns ErrNotBuilt.
func NewSocket(network, addr string, opts ...Option) (Socket, error) { return nil, ErrNotBuilt }

// NewSocketFromPacketConn returns ErrNotBuilt.
func NewSocketFromPacketConn(pc net.PacketConn, opts ...Option) (Socket, error) {
	return nil, ErrNotBuilt
}
