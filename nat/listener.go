package nat

import (
	"context"
	"net"
	"net/netip"
)

// PacketListener opens packet sockets. *vnet.Net from
// github.com/pion/transport/v5/vnet satisfies it, as does [SystemListener];
// a network-namespace harness can supply its own.
type PacketListener interface {
	ListenPacket(network, address string) (net.PacketConn, error)
}

// SystemListener opens real sockets with net.ListenPacket, in the network
// namespace of the calling thread.
type SystemListener struct{}

// ListenPacket implements PacketListener.
func (SystemListener) ListenPacket(network, address string) (net.PacketConn, error) {
	return net.ListenPacket(network, address)
}

// Dialer opens connected sockets; *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// addrPortOf converts a net.Addr from a socket into a netip.AddrPort with
// IPv4-mapped IPv6 addresses unmapped. It returns the zero value when the
// address is not an IP address.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// udpAddr converts ap into the *net.UDPAddr that every PacketConn
// (including pion's vnet) accepts in WriteTo.
func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(ap)
}

// network returns "udp4" or "udp6" for an address family.
func network(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "udp4"
	}
	return "udp6"
}
