// Package udpbatch moves UDP datagrams in batches: recvmmsg and sendmmsg
// on sockets taken out of Go's network poller, and one epoll set (watched
// by Go's poller) that says which of thousands of sockets are readable.
// A relay's per-packet loop then costs one system call per batch on its
// busy sockets instead of two per packet and a goroutine switch, which is
// the difference the supernode's README measures against coturn.
//
// It is Linux only; elsewhere every constructor returns ErrUnsupported and
// callers keep their portable path. It holds no relay policy.
//
// Why not golang.org/x/net/ipv4's ReadBatch: it takes sockets that stay in
// Go's poller (each packet then also wakes the poller) and returns each
// source as a freshly allocated *net.UDPAddr; here sources are
// netip.AddrPort values in preallocated messages, so a batch allocates
// nothing (TestReadWriteBatchAllocs).
package udpbatch

import (
	"errors"
	"net/netip"
)

// ErrUnsupported is returned on platforms without recvmmsg/epoll.
var ErrUnsupported = errors.New("udpbatch: not supported on this platform")

// ErrClosed is returned by operations on a closed Conn or Poller.
var ErrClosed = errors.New("udpbatch: closed")

// Msg is one datagram of a Batch.
type Msg struct {
	// Buf is the message's buffer. Reads fill Buf[Headroom:len(Buf)] and
	// set N; the datagram is then Buf[Headroom:Headroom+N], the headroom
	// is free for a header the caller prepends without copying, and any
	// capacity past len(Buf) for a trailer. Writes send Buf as it is (set
	// Buf to the slice to send).
	Buf []byte
	// N is the length of a received datagram.
	N int
	// Addr is the source of a received datagram, or the destination of
	// one to send.
	Addr netip.AddrPort
	// Local, with a Batch made with pktinfo, is the IPv4 address a
	// received datagram was sent to, or the source address to send from
	// (zero: the socket's own).
	Local netip.Addr
	// Time is when the kernel received the datagram (Unix nanoseconds),
	// on a Conn with timestamps enabled (Conn.EnableTimestamps); else 0.
	Time int64
}

// Payload is a received message's datagram.
func (m *Msg) Payload(headroom int) []byte { return m.Buf[headroom : headroom+m.N] }
