//go:build !linux

package udpbatch

import (
	"net"
	"net/netip"
)

// Batch is unused off Linux.
type Batch struct {
	Msgs     []Msg
	Headroom int
}

// NewBatch makes a batch (usable only with a Conn, which cannot exist here).
func NewBatch(n, size, headroom int, pktinfo bool) *Batch {
	b := &Batch{Msgs: make([]Msg, n), Headroom: headroom}
	for i := range b.Msgs {
		b.Msgs[i].Buf = make([]byte, size+headroom)
	}
	return b
}

// Conn is unavailable off Linux.
type Conn struct{}

func Listen(netip.AddrPort) (*Conn, error)            { return nil, ErrUnsupported }
func Detach(net.PacketConn) (*Conn, error)            { return nil, ErrUnsupported }
func (c *Conn) LocalAddr() netip.AddrPort             { return netip.AddrPort{} }
func (c *Conn) UDPAddr() *net.UDPAddr                 { return nil }
func (c *Conn) SetBuffers(int, int) (int, int, error) { return 0, 0, ErrUnsupported }
func (c *Conn) EnablePktinfo() error                  { return ErrUnsupported }
func (c *Conn) Close() error                          { return nil }
func (c *Conn) ReadBatch(*Batch) (int, error)         { return 0, ErrUnsupported }
func (c *Conn) WriteBatch(*Batch, int) (int, error)   { return 0, ErrUnsupported }
func (c *Conn) WriteTo([]byte, netip.AddrPort) error  { return ErrUnsupported }
func (c *Conn) ReadFrom([]byte) (int, netip.AddrPort, bool, error) {
	return 0, netip.AddrPort{}, false, ErrUnsupported
}

// Poller is unavailable off Linux.
type Poller struct{}

func NewPoller(int) (*Poller, error)      { return nil, ErrUnsupported }
func (p *Poller) Add(*Conn, uint32) error { return ErrUnsupported }
func (p *Poller) Remove(*Conn) error      { return nil }
func (p *Poller) Wait() ([]uint32, error) { return nil, ErrUnsupported }
func (p *Poller) Close() error            { return nil }
