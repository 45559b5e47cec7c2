package natlab

import (
	"context"
	"fmt"
	"net"

	"github.com/pion/transport/v5"
)

// Net is a pion transport.Net whose sockets live in a host's namespace:
// give it to webrtc.SettingEngine.SetNet or ice.AgentConfig.Net and the
// agent gathers candidates from, and sends through, the host's interfaces
// (behind its home's NAT) while running in the test process.
//
// Every address must be an IP literal (ErrNotLiteral otherwise): a name
// would be resolved by the test process's resolver, outside the lab. Turn
// off mDNS candidates (ice.MulticastDNSModeDisabled) as with any test Net.
type Net struct {
	h *Host
}

// Compile-time assertion.
var _ transport.Net = (*Net)(nil)

// Net returns a transport.Net bound to the host's namespace.
func (h *Host) Net() *Net { return &Net{h: h} }

// ListenPacket announces on the local address inside the namespace.
func (n *Net) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.h.ListenPacket(network, address)
}

// ListenUDP is net.ListenUDP inside the namespace.
func (n *Net) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.h.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListenTCP is net.ListenTCP inside the namespace.
func (n *Net) ListenTCP(network string, laddr *net.TCPAddr) (transport.TCPListener, error) {
	var ln *net.TCPListener
	err := n.h.Do(func() (err error) {
		ln, err = net.ListenTCP(network, laddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: listen %s %v: %w", n.h.Name, network, laddr, err)
	}
	return tcpListener{ln}, nil
}

type tcpListener struct{ *net.TCPListener }

func (l tcpListener) AcceptTCP() (transport.TCPConn, error) { return l.TCPListener.AcceptTCP() }

// Dial connects from inside the namespace.
func (n *Net) Dial(network, address string) (net.Conn, error) {
	return n.h.Dialer().Dial(network, address)
}

// DialUDP is net.DialUDP inside the namespace.
func (n *Net) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	var c *net.UDPConn
	err := n.h.Do(func() (err error) {
		c, err = net.DialUDP(network, laddr, raddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: dial %s %v: %w", n.h.Name, network, raddr, err)
	}
	return c, nil
}

// DialTCP is net.DialTCP inside the namespace.
func (n *Net) DialTCP(network string, laddr, raddr *net.TCPAddr) (transport.TCPConn, error) {
	var c *net.TCPConn
	err := n.h.Do(func() (err error) {
		c, err = net.DialTCP(network, laddr, raddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: dial %s %v: %w", n.h.Name, network, raddr, err)
	}
	return c, nil
}

// ResolveIPAddr parses an IP literal.
func (n *Net) ResolveIPAddr(network, address string) (*net.IPAddr, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	return net.ResolveIPAddr(network, address)
}

// ResolveUDPAddr parses an IP literal and port.
func (n *Net) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	return net.ResolveUDPAddr(network, address)
}

// ResolveTCPAddr parses an IP literal and port.
func (n *Net) ResolveTCPAddr(network, address string) (*net.TCPAddr, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	return net.ResolveTCPAddr(network, address)
}

// Interfaces lists the namespace's interfaces and their addresses, read
// fresh on each call.
func (n *Net) Interfaces() ([]*transport.Interface, error) {
	var out []*transport.Interface
	err := n.h.Do(func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, ifi := range ifs {
			ti := transport.NewInterface(ifi)
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			for _, a := range addrs {
				ti.AddAddress(a)
			}
			out = append(out, ti)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: interfaces: %w", n.h.Name, err)
	}
	return out, nil
}

// InterfaceByIndex returns the namespace's interface with that index.
func (n *Net) InterfaceByIndex(index int) (*transport.Interface, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		if ifi.Index == index {
			return ifi, nil
		}
	}
	return nil, fmt.Errorf("%w: index=%d in %s", transport.ErrInterfaceNotFound, index, n.h.Name)
}

// InterfaceByName returns the namespace's interface with that name.
func (n *Net) InterfaceByName(name string) (*transport.Interface, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		if ifi.Name == name {
			return ifi, nil
		}
	}
	return nil, fmt.Errorf("%w: %s in %s", transport.ErrInterfaceNotFound, name, n.h.Name)
}

// CreateDialer wraps d so that its dials originate in the namespace.
func (n *Net) CreateDialer(d *net.Dialer) transport.Dialer {
	nd := &Dialer{host: n.h}
	if d != nil {
		nd.Dialer = *d
	}
	return nd
}

// CreateListenConfig wraps lc so that its listeners live in the namespace.
func (n *Net) CreateListenConfig(lc *net.ListenConfig) transport.ListenConfig {
	c := listenConfig{h: n.h}
	if lc != nil {
		c.lc = *lc
	}
	return c
}

type listenConfig struct {
	h  *Host
	lc net.ListenConfig
}

func (c listenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	var ln net.Listener
	err := c.h.Do(func() (err error) {
		ln, err = c.lc.Listen(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: listen %s %s: %w", c.h.Name, network, address, err)
	}
	return ln, nil
}

func (c listenConfig) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := c.h.Do(func() (err error) {
		pc, err = c.lc.ListenPacket(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: listen %s %s: %w", c.h.Name, network, address, err)
	}
	return pc, nil
}
