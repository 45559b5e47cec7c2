// Package sockbuf gives UDP sockets buffers large enough for a data
// channel's bursts. A pion peer connection reads each ICE socket on one
// goroutine; the kernel's default receive buffer (208 KiB, ~90 packets of
// WebRTC's 1,200 bytes) overflows whenever that goroutine lags a few
// milliseconds behind a sender that has SCTP's window (1 MiB) in flight —
// on loopback, under load, ~0.4 % of a file transfer's packets were
// dropped that way (RcvbufErrors in /proc/net/snmp), and each loss cost a
// halved congestion window or, at the tail of a burst, a 1 s
// retransmission timeout that held up every channel of the link, the chat
// too. Net hands ICE sockets that hold a whole window.
package sockbuf

import (
	"net"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
)

// DefaultSize is the receive and send buffer Net asks for: SCTP's
// receive window (1 MiB of payload) is ~2 MiB of kernel memory in
// 1,200-byte datagrams, and Linux halves what it grants for bookkeeping.
const DefaultSize = 4 << 20

// Net is pion's standard network (pion/transport stdnet) whose UDP
// sockets get Size-byte buffers (zero means DefaultSize). Interfaces are
// read afresh on every call, as pion does for each peer connection when
// it is given no network, so one Net serves links made long apart.
type Net struct {
	stdnet.Net
	Size int
}

var _ transport.Net = (*Net)(nil)

// ListenUDP is stdnet's with the buffers set.
func (n *Net) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if u, ok := c.(*net.UDPConn); ok {
		Set(u, n.size(), n.size())
	}
	return c, nil
}

// ListenPacket is stdnet's with the buffers set on UDP sockets.
func (n *Net) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	if u, ok := c.(*net.UDPConn); ok {
		Set(u, n.size(), n.size())
	}
	return c, nil
}

// Interfaces lists the interfaces as they are now.
func (n *Net) Interfaces() ([]*transport.Interface, error) {
	fresh, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return fresh.Interfaces()
}

// InterfaceByIndex finds an interface as they are now.
func (n *Net) InterfaceByIndex(index int) (*transport.Interface, error) {
	fresh, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return fresh.InterfaceByIndex(index)
}

// InterfaceByName finds an interface as they are now.
func (n *Net) InterfaceByName(name string) (*transport.Interface, error) {
	fresh, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return fresh.InterfaceByName(name)
}

func (n *Net) size() int {
	if n.Size > 0 {
		return n.Size
	}
	return DefaultSize
}

// Set asks for rcv- and snd-byte buffers on c (0 leaves one as it is)
// and returns what the kernel granted (0 where it cannot say). Beyond
// net.core.rmem_max / wmem_max it takes CAP_NET_ADMIN (Linux:
// SO_RCVBUFFORCE, as quic-go does); without it the kernel's maximum is
// what c gets.
func Set(c *net.UDPConn, rcv, snd int) (gotRcv, gotSnd int) { return set(c, rcv, snd) }
