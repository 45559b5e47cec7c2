package supernode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/relayconn"
	"github.com/parley-voice/parley/internal/udpbatch"
	"github.com/pion/turn/v5"
)

// What the budgets count besides a datagram's payload: every limit is in
// bytes on the wire, as the operator's link carries them.
const (
	udp4Overhead      = 20 + 8 // IPv4 and UDP headers
	udp6Overhead      = 40 + 8
	channelDataHeader = 4 // RFC 8656 section 12.4
	// quicDatagramOverhead is a QUIC short-header packet around one
	// DATAGRAM frame (RFC 9000 section 17.3, RFC 9221): flags 1,
	// connection ID 4 (quic-go's length), packet number 2, frame type 1,
	// length 2, AEAD tag 16, and the relay stream's ID 1.
	quicDatagramOverhead = 27
	// relayHeadroom is kept free in front of a datagram read from a peer,
	// so the ChannelData header and the QUIC stream ID go in front of it
	// without a copy.
	relayHeadroom = channelDataHeader + relayconn.Headroom
	// maxDatagram bounds what is read from a peer (pion's own buffer is
	// 1600, which also holds the headroom and the padding).
	maxDatagram = 1600 - relayHeadroom - 3
)

// putChannelData turns buf[relayHeadroom:] (a peer's datagram) into a
// ChannelData message on number (RFC 8656 section 12.4): the header goes
// into the headroom, and the message is padded to a multiple of 4 bytes,
// as pion/turn sends it and as TURN over a stream must carry it (its
// clients read datagrams with the same framing). It returns buf extended
// by the padding.
func putChannelData(buf []byte, number uint16) []byte {
	n := len(buf) - relayHeadroom
	hdr := buf[relayHeadroom-channelDataHeader : relayHeadroom]
	binary.BigEndian.PutUint16(hdr, number)
	binary.BigEndian.PutUint16(hdr[2:], uint16(n))
	pad := (4 - n%4) % 4
	buf = buf[:len(buf)+pad]
	for i := len(buf) - pad; i < len(buf); i++ {
		buf[i] = 0
	}
	return buf
}

// Socket buffers of the relay's UDP sockets: a burst of a few thousand
// voice packets fits, where Linux's default 208 KiB drops them (the
// issue's measurement at 5,000 flows). Beyond net.core.rmem_max they need
// CAP_NET_ADMIN, as quic-go's own 7 MiB do.
const (
	listenerBuffer = 8 << 20
	relayRcvBuffer = 2 << 20
	relaySndBuffer = 1 << 20
)

// relayKind is how an allocation's client reaches the supernode.
type relayKind uint8

const (
	viaUDP    relayKind = iota // the TURN UDP listener (browsers)
	viaStream                  // a QUIC relay stream (Parley clients)
	viaTCP                     // TURN over TCP or TLS
)

// channel is a bound TURN channel (RFC 8656 section 12): what the fast
// path forwards by. pion/turn binds it (auth, permission, lifetime) and
// tells us through its events.
type channel struct {
	number  uint16
	peer    netip.AddrPort
	ownOnly bool // the peer is this supernode: only its relay ports
}

// chanTable is one allocation's channels. It is replaced, never changed,
// so the packet paths read it without a lock.
type chanTable struct {
	byNum  map[uint16]*channel
	byPeer map[netip.AddrPort]*channel
}

// relayConn is the socket of one TURN allocation (its relayed transport
// address, RFC 8656 section 2) and the allocation's fast-path state. pion
// reads and writes it as a net.PacketConn for everything the fast path
// leaves to it (Send and Data indications, packets of unbound peers).
type relayConn struct {
	s    *Server
	kind relayKind
	pc   net.PacketConn // a Go socket (QUIC and TCP allocations, or the data plane is off)
	uc   *net.UDPConn   // pc, when it is one
	sock *udpbatch.Conn // the data plane's socket (TURN UDP allocations), else nil
	slow chan slowPacket
	tag  uint32 // the data plane's poll tag

	local   net.Addr
	port    uint16
	v6      bool
	created time.Time
	session budget

	chans  atomic.Pointer[chanTable]
	stream atomic.Pointer[streamConn] // the client's relay stream (viaStream)
	client netip.AddrPort             // the client (viaUDP); guarded by dataplane.mu

	closed   atomic.Bool
	shed     atomic.Bool
	done     chan struct{}
	bytes    atomic.Uint64 // wire bytes sent for this allocation, both ways
	deadline atomic.Pointer[time.Time]

	// The governor's view (its goroutine only), and what it counted this
	// session for in the expected load (freed when it ends).
	lastBytes uint64
	rateBps   float64
	measured  bool
	share     atomic.Uint64 // float64 bits
}

// slowPacket is a datagram handed to pion.
type slowPacket struct {
	b    []byte
	from net.Addr
}

func newRelayConn(s *Server, kind relayKind, pc net.PacketConn) *relayConn {
	c := &relayConn{s: s, kind: kind, pc: pc, done: make(chan struct{}), created: time.Now(), session: newBudget(s.cfg.MaxSessionKbps)}
	c.uc, _ = pc.(*net.UDPConn)
	c.local = pc.LocalAddr()
	ap := addrPort(c.local)
	c.port, c.v6 = ap.Port(), ap.Addr().Is6()
	c.chans.Store(&chanTable{})
	return c
}

func (c *relayConn) udpOverhead() int {
	if c.v6 {
		return udp6Overhead
	}
	return udp4Overhead
}

// count charges n wire bytes sent for this allocation to its session
// budget and the supernode's total; false means drop (the session is over
// its own budget, or was shed).
func (c *relayConn) count(n int, now time.Time) bool {
	if c.shed.Load() {
		return false
	}
	if !c.session.allow(now, n) {
		c.s.stats.sessionOverBudget.Add(1)
		return false
	}
	c.bytes.Add(uint64(n))
	c.s.stats.bytesRelayed.Add(uint64(n))
	return true
}

// peerAllowed applies the peer policy to a destination the fast path
// already knows is bound: only this supernode's own address needs a
// second look (its relay ports only, which come and go).
func (c *relayConn) peerAllowed(ch *channel) bool {
	if ch.ownOnly && !c.s.relays.has(ch.peer.Port()) {
		c.s.stats.deniedPackets.Add(1)
		return false
	}
	return true
}

// sendToPeer relays a client's ChannelData payload to the channel's peer
// (the fast path: the data plane's loop, or a QUIC connection's datagram
// goroutine).
func (c *relayConn) sendToPeer(payload []byte, ch *channel, now time.Time) {
	if !c.peerAllowed(ch) || !c.count(len(payload)+c.udpOverhead(), now) {
		return
	}
	var err error
	switch {
	case c.sock != nil:
		err = c.sock.WriteTo(payload, ch.peer)
	case c.uc != nil:
		_, err = c.uc.WriteToUDPAddrPort(payload, ch.peer)
	default:
		_, err = c.pc.WriteTo(payload, net.UDPAddrFromAddrPort(ch.peer))
	}
	if err != nil && !c.closed.Load() {
		c.s.stats.sendErrors.Add(1)
	}
}

// WriteTo sends to a peer for pion (Send indications, and ChannelData
// from TCP clients): the peer policy on every packet, and the budgets.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ap := addrPort(addr)
	ok, ownOnly, _ := c.s.policy.verdict(ap.Addr())
	if ok && ownOnly && !c.s.relays.has(ap.Port()) {
		ok = false
	}
	if !ok {
		c.s.stats.deniedPackets.Add(1)
		return len(p), nil
	}
	if !c.count(len(p)+c.udpOverhead(), time.Now()) {
		return len(p), nil
	}
	if c.sock != nil {
		if err := c.sock.WriteTo(p, ap); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.pc.WriteTo(p, addr)
}

// ReadFrom receives from a peer for pion. On a data-plane socket that is
// what the loop handed over (peers without a channel); on a QUIC
// allocation's socket it forwards bound peers' packets to the client as
// datagrams itself and returns only the rest.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.sock != nil {
		return c.readSlow(p)
	}
	if c.uc == nil || len(p) <= relayHeadroom {
		for {
			n, addr, err := c.pc.ReadFrom(p)
			if err != nil || c.count(n+channelDataHeader+c.udpOverhead(), time.Now()) {
				return n, addr, err
			}
		}
	}
	buf := p[:min(len(p), relayHeadroom+maxDatagram+3)]
	for {
		n, from, err := c.uc.ReadFromUDPAddrPort(buf[relayHeadroom : len(buf)-3])
		if err != nil {
			return 0, nil, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if sc := c.stream.Load(); sc != nil {
			if ch := c.chans.Load().byPeer[from]; ch != nil {
				if c.count((n+3)&^3+channelDataHeader+quicDatagramOverhead+c.udpOverhead(), time.Now()) {
					sc.sendChannelData(buf[:relayHeadroom+n], ch.number)
				}
				continue
			}
		}
		if !c.count(n+channelDataHeader+c.udpOverhead(), time.Now()) {
			continue
		}
		copy(p, buf[relayHeadroom:relayHeadroom+n])
		return n, net.UDPAddrFromAddrPort(from), nil
	}
}

// deadlineTimer is a channel that fires at *dl (nil: never) and its stop;
// passed reports a deadline already past.
func deadlineTimer(dl *time.Time) (c <-chan time.Time, stop func(), passed bool) {
	if dl == nil || dl.IsZero() {
		return nil, func() {}, false
	}
	d := time.Until(*dl)
	if d <= 0 {
		return nil, func() {}, true
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }, false
}

// readSlow waits for a packet the data plane handed over.
func (c *relayConn) readSlow(p []byte) (int, net.Addr, error) {
	timeout, stop, passed := deadlineTimer(c.deadline.Load())
	defer stop()
	if passed {
		return 0, nil, os.ErrDeadlineExceeded
	}
	for {
		select {
		case pk := <-c.slow:
			if !c.count(len(pk.b)+channelDataHeader+c.udpOverhead(), time.Now()) {
				continue
			}
			return copy(p, pk.b), pk.from, nil
		case <-c.done:
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		}
	}
}

// Close releases the relay port and the socket.
func (c *relayConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	close(c.done)
	c.s.relays.remove(c.port, c)
	c.s.gov.free(math.Float64frombits(c.share.Load()))
	if sc := c.stream.Load(); sc != nil {
		sc.relay.CompareAndSwap(c, nil)
	}
	if c.sock != nil {
		if d := c.s.dp; d != nil {
			d.removeRelay(c)
		}
		return c.sock.Close()
	}
	return c.pc.Close()
}

func (c *relayConn) LocalAddr() net.Addr { return c.local }

func (c *relayConn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

func (c *relayConn) SetReadDeadline(t time.Time) error {
	if c.sock != nil {
		c.deadline.Store(&t)
		return nil
	}
	return c.pc.SetReadDeadline(t)
}

func (c *relayConn) SetWriteDeadline(t time.Time) error {
	if c.sock != nil {
		return nil // writes never wait: a full send buffer drops, as the network would
	}
	return c.pc.SetWriteDeadline(t)
}

// setChannel records a channel pion bound (nil ch: removed).
func (c *relayConn) setChannel(number uint16, peer netip.AddrPort, add bool) {
	c.s.chanMu.Lock() // serialises table replacement (pion calls from several goroutines)
	defer c.s.chanMu.Unlock()
	old := c.chans.Load()
	t := &chanTable{byNum: make(map[uint16]*channel, len(old.byNum)+1), byPeer: make(map[netip.AddrPort]*channel, len(old.byPeer)+1)}
	for k, v := range old.byNum {
		if k != number {
			t.byNum[k] = v
			t.byPeer[v.peer] = v
		}
	}
	if add {
		_, ownOnly, _ := c.s.policy.verdict(peer.Addr())
		ch := &channel{number: number, peer: peer, ownOnly: ownOnly}
		t.byNum[number] = ch
		t.byPeer[peer] = ch
	}
	c.chans.Store(t)
}

// relayGen allocates the relayed transport address of an allocation: a
// UDP socket from Config.PacketListener, advertised on PublicAddr. One per
// listener kind (pion gives each listener its own allocation manager).
type relayGen struct {
	s    *Server
	kind relayKind
}

func (g *relayGen) Validate() error { return nil }

func (g *relayGen) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	s := g.s
	if conf.Network != "udp4" && conf.Network != "udp6" {
		return nil, nil, fmt.Errorf("supernode: relay network %q not supported", conf.Network)
	}
	if (conf.Network == "udp6") != s.public.Is6() {
		return nil, nil, fmt.Errorf("supernode: relay family %s does not match public address %s", conf.Network, s.public)
	}
	pc, err := s.relaySocket(conf.Network, conf.RequestedPort)
	if err != nil {
		return nil, nil, fmt.Errorf("supernode: relay socket: %w", err)
	}
	rc := newRelayConn(s, g.kind, pc)
	if g.kind == viaUDP && s.dp != nil {
		// The data plane reads it; pion sees the packets it leaves over.
		if sock, err := udpbatch.Detach(pc); err == nil {
			rc.sock, rc.pc, rc.uc = sock, nil, nil
			rc.slow = make(chan slowPacket, 16)
			sock.SetBuffers(relayRcvBuffer, relaySndBuffer)
			if err := s.dp.addRelay(rc); err != nil {
				sock.Close()
				return nil, nil, fmt.Errorf("supernode: relay socket: %w", err)
			}
		}
	} else if uc, ok := pc.(*net.UDPConn); ok {
		uc.SetReadBuffer(relayRcvBuffer)
		uc.SetWriteBuffer(relaySndBuffer)
	}
	s.relays.add(rc.port, rc)
	return rc, &net.UDPAddr{IP: s.public.AsSlice(), Port: int(rc.port)}, nil
}

// relaySocket opens an allocation's relay socket: on the requested port,
// else on a free port of Config.RelayPorts (tried at random, like coturn's
// min-port/max-port), else on any port the kernel picks.
func (s *Server) relaySocket(network string, requested int) (net.PacketConn, error) {
	listen := func(port int) (net.PacketConn, error) {
		return s.cfg.PacketListener.ListenPacket(network, net.JoinHostPort(s.bindIP(), strconv.Itoa(port)))
	}
	lo, hi := s.cfg.RelayPorts.Min, s.cfg.RelayPorts.Max
	if requested > 0 || lo == 0 {
		return listen(requested)
	}
	n := int(hi) - int(lo) + 1
	start := rand.IntN(n)
	var err error
	for i := 0; i < min(n, 128); i++ { // random probes, then give up: a full range is an overload
		port := int(lo) + (start+i*7919)%n
		var pc net.PacketConn
		if pc, err = listen(port); err == nil {
			return pc, nil
		}
	}
	return nil, fmt.Errorf("no free port in %d-%d: %w", lo, hi, err)
}

var errNoTCPRelay = errors.New("supernode: TCP relay allocations (RFC 6062) are not offered")

func (g *relayGen) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

func (g *relayGen) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errNoTCPRelay
}

// relayPorts is this supernode's live allocations by relay port: the only
// ports of its own address that relaying may reach (so two users relayed
// by the same supernode can talk relay to relay), and how pion's events
// (which name the relayed address) find an allocation.
type relayPorts struct {
	mu    sync.Mutex // guards conns
	conns map[uint16]*relayConn
}

func (r *relayPorts) add(p uint16, c *relayConn) {
	r.mu.Lock()
	if r.conns == nil {
		r.conns = map[uint16]*relayConn{}
	}
	r.conns[p] = c
	r.mu.Unlock()
}

func (r *relayPorts) remove(p uint16, c *relayConn) {
	r.mu.Lock()
	if r.conns[p] == c {
		delete(r.conns, p)
	}
	r.mu.Unlock()
}

func (r *relayPorts) has(p uint16) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[p] != nil
}

func (r *relayPorts) get(p uint16) *relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[p]
}

// all returns the live allocations.
func (r *relayPorts) all() []*relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*relayConn, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	return out
}
