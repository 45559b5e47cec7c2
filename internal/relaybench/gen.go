package relaybench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/relayconn"
	"github.com/parley-voice/parley/internal/udpbatch"
	"github.com/parley-voice/parley/proto"
	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"
)

// Paths through a relay.
const (
	PathUDP  = "udp"  // TURN over UDP, ChannelData (browsers)
	PathTCP  = "tcp"  // TURN over TCP
	PathTLS  = "tls"  // TURN over TLS
	PathQUIC = "quic" // Parley's relay stream, ChannelData as QUIC datagrams
)

// target is a running relay and what the generator needs to use it.
type target struct {
	name       string // "parley", "coturn", "forwarder"
	pid        int
	udp        netip.AddrPort
	tcp, tls   netip.AddrPort
	quic       netip.AddrPort
	fp, token  string           // QUIC: certificate pin, relay token
	user, pass string           // TURN credentials
	forwarder  bool             // speaks the forwarder's bind, not TURN
	relays     []netip.AddrPort // the forwarder's relay sockets, by flow
	stop       func()
}

// genFlow is one relayed flow: a client with an allocation and a peer.
type genFlow struct {
	id               int  // its slot: what packets carry
	up               bool // client -> peer; else peer -> client
	both             bool // both ways (a voice session), each due time
	clientIP, peerIP netip.Addr
	tc               *turnCtl
	relayed          netip.AddrPort
	ctl              chan []byte // UDP set-up: STUN responses for this client

	stream net.Conn        // tcp, tls
	rc     *relayconn.Conn // quic
	qc     *quic.Conn      // quic
	qtr    *quic.Transport // quic
	qpc    net.PacketConn  // quic
	wmu    sync.Mutex      // serialises writes on stream
}

// generator drives one run: flows through one path of one target.
type generator struct {
	t       *target
	path    string
	flows   []*genFlow
	slots   []atomic.Pointer[genFlow] // the flows the sender sends for (nil: none now)
	nextIdx int                       // address index of the next new flow
	size    int
	measure atomic.Int64 // Unix ns of the first packet whose latency counts

	client, peer *udpbatch.Conn // wildcard sockets speaking for every flow's IP (pktinfo)
	cpoll, ppoll *udpbatch.Poller

	mu  sync.Mutex // guards ctl
	ctl map[netip.Addr]*genFlow

	hist      hist
	sent      atomic.Int64
	recv      atomic.Int64
	recvEarly atomic.Int64 // received before the measurement window
	lagged    atomic.Int64 // most packets the pacer was behind
	wg        sync.WaitGroup
}

// flowIP gives flow i its own loopback address (127.a.b.c with b, c in
// 1..250): one wildcard socket then speaks for thousands of clients.
func flowIP(first byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, first + byte(i/62500), byte(i/250%250 + 1), byte(i%250 + 1)})
}

func newGenerator(t *target, path string, n, size int) (*generator, error) {
	g := &generator{t: t, path: path, size: size, ctl: map[netip.Addr]*genFlow{}}
	g.measure.Store(1 << 62)
	for i := range n {
		g.flows = append(g.flows, g.newFlow(i))
	}
	g.slots = make([]atomic.Pointer[genFlow], n)
	var err error
	for _, c := range []**udpbatch.Conn{&g.client, &g.peer} {
		if *c, err = udpbatch.Listen(netip.MustParseAddrPort("0.0.0.0:0")); err != nil {
			g.close()
			return nil, err
		}
		(*c).EnablePktinfo()
		(*c).EnableTimestamps() // latency from the kernel's receive time, not the reader's wake-up
		(*c).SetBuffers(16<<20, 16<<20)
	}
	if g.cpoll, err = udpbatch.NewPoller(16); err != nil {
		g.close()
		return nil, err
	}
	if g.ppoll, err = udpbatch.NewPoller(16); err != nil {
		g.close()
		return nil, err
	}
	g.cpoll.Add(g.client, 0)
	g.ppoll.Add(g.peer, 0)
	g.wg.Add(2)
	go g.readUDP(g.cpoll, g.client, true)
	go g.readUDP(g.ppoll, g.peer, false)
	return g, nil
}

// newFlow makes a flow for slot with fresh addresses.
func (g *generator) newFlow(slot int) *genFlow {
	i := g.nextIdx
	g.nextIdx++
	return &genFlow{id: slot, up: slot%2 == 0, clientIP: flowIP(16, i), peerIP: flowIP(80, i), ctl: make(chan []byte, 4)}
}

func (g *generator) peerAddr(f *genFlow) netip.AddrPort {
	return netip.AddrPortFrom(f.peerIP, g.peer.LocalAddr().Port())
}

// now is the wall clock in Unix nanoseconds, as packets carry it (and as
// the kernel stamps received datagrams).
func (g *generator) now() int64 { return time.Now().UnixNano() }

// record takes a received payload, [flow 4][seq 4][sent ns 8]..., that
// arrived at at (Unix ns: the kernel's receive time where the socket
// gives one, else when the generator read it).
func (g *generator) record(p []byte, at int64) {
	if len(p) < 16 || int(binary.BigEndian.Uint32(p)) >= len(g.slots) {
		return
	}
	sent := int64(binary.BigEndian.Uint64(p[8:]))
	g.recv.Add(1)
	if sent < g.measure.Load() {
		g.recvEarly.Add(1)
		return
	}
	if at == 0 {
		at = g.now()
	}
	g.hist.add(time.Duration(at - sent))
}

// readUDP reads a wildcard socket until it closes: at the client side
// ChannelData (data) and STUN (set-up, by the address it was sent to).
func (g *generator) readUDP(p *udpbatch.Poller, c *udpbatch.Conn, clientSide bool) {
	defer g.wg.Done()
	b := udpbatch.NewBatch(64, 2048, 0, true)
	for {
		if _, err := p.Wait(); err != nil {
			return
		}
		for {
			n, err := c.ReadBatch(b)
			if err != nil || n == 0 {
				break
			}
			for i := range n {
				m := &b.Msgs[i]
				d := m.Payload(0)
				switch {
				case !clientSide:
					g.record(d, m.Time)
				case len(d) >= 4 && d[0] >= 0x40 && d[0] <= 0x7f:
					l := int(binary.BigEndian.Uint16(d[2:]))
					if 4+l <= len(d) {
						g.record(d[4:4+l], m.Time)
					}
				default: // STUN, or the forwarder's ack: set-up
					g.mu.Lock()
					f := g.ctl[m.Local]
					g.mu.Unlock()
					if f != nil {
						select {
						case f.ctl <- append([]byte(nil), d...):
						default:
						}
					}
				}
			}
		}
	}
}

// udpCtl is a flow's TURN control over the shared client socket.
type udpCtl struct {
	g *generator
	f *genFlow
}

func (u udpCtl) send(b []byte) error {
	m := udpbatch.NewBatch(1, 0, 0, true)
	m.Msgs[0] = udpbatch.Msg{Buf: b, Addr: u.g.t.udp, Local: u.f.clientIP}
	_, err := u.g.client.WriteBatch(m, 1)
	return err
}

func (u udpCtl) recv(timeout time.Duration) ([]byte, error) {
	select {
	case b := <-u.f.ctl:
		return b, nil
	case <-time.After(timeout):
		return nil, errTimeout
	}
}

// setup makes every flow's allocation and channel (or forwarder bind),
// a few flows at a time.
func (g *generator) setup(ctx context.Context) error {
	work := make(chan *genFlow)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := g.setupFlow(ctx, f); err != nil {
					select {
					case errc <- fmt.Errorf("flow %d: %w", f.id, err):
					default:
					}
				}
			}
		}()
	}
	for _, f := range g.flows {
		select {
		case work <- f:
		case err := <-errc:
			close(work)
			wg.Wait()
			return err
		case <-ctx.Done():
			close(work)
			wg.Wait()
			return ctx.Err()
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

const benchChannel = 0x4000

func (g *generator) setupFlow(ctx context.Context, f *genFlow) error {
	g.mu.Lock()
	g.ctl[f.clientIP] = f
	g.mu.Unlock()
	if g.t.forwarder {
		var bind [12]byte
		bind[1] = 'B'
		binary.BigEndian.PutUint32(bind[2:], uint32(f.id))
		pa := g.peerAddr(f)
		a4 := pa.Addr().As4()
		copy(bind[6:], a4[:])
		binary.BigEndian.PutUint16(bind[10:], pa.Port())
		for range 8 {
			udpCtl{g, f}.send(bind[:])
			if b, err := (udpCtl{g, f}).recv(250 * time.Millisecond); err == nil && len(b) == 6 && b[1] == 'K' {
				f.relayed = g.t.relays[f.id]
				g.slots[f.id].Store(f)
				return nil
			}
		}
		return errTimeout
	}
	tc := &turnCtl{user: g.t.user, pass: g.t.pass}
	f.tc = tc
	switch g.path {
	case PathUDP:
		tc.c = udpCtl{g, f}
	case PathTCP, PathTLS:
		addr := g.t.tcp
		if g.path == PathTLS {
			addr = g.t.tls
		}
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: f.clientIP.AsSlice()}}
		c, err := d.DialContext(ctx, "tcp", addr.String())
		if err != nil {
			return err
		}
		if g.path == PathTLS {
			tcfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a benchmark of our own relay on loopback
			if g.t.fp != "" {
				tcfg = proto.PinnedTLSConfig(g.t.fp)
			}
			tlc := tls.Client(c, tcfg)
			if err := tlc.HandshakeContext(ctx); err != nil {
				c.Close()
				return err
			}
			c = tlc
		}
		f.stream = c
		tc.c, tc.reliable = &streamCtl{conn: c}, true
	case PathQUIC:
		if err := g.dialQUIC(ctx, f); err != nil {
			return err
		}
		tc.c, tc.reliable = &streamCtl{conn: f.rc}, true
	default:
		return fmt.Errorf("relaybench: unknown path %q", g.path)
	}
	relayed, err := tc.allocate()
	if err != nil {
		return err
	}
	f.relayed = relayed
	if err := tc.channelBind(benchChannel, g.peerAddr(f)); err != nil {
		return err
	}
	if f.stream != nil {
		g.wg.Add(1)
		go g.readStream(f)
	}
	g.slots[f.id].Store(f)
	return nil
}

// remove stops sending for f, lets what is in flight arrive, and deletes
// its allocation (Refresh with lifetime 0, RFC 8656 section 7.3).
func (g *generator) remove(f *genFlow) {
	g.slots[f.id].CompareAndSwap(f, nil)
	time.Sleep(200 * time.Millisecond)
	if f.tc != nil {
		f.tc.refresh(0)
	}
	g.mu.Lock()
	delete(g.ctl, f.clientIP)
	g.mu.Unlock()
	if f.stream != nil {
		f.stream.Close()
	}
}

// dialQUIC opens a flow's own QUIC connection and relay stream (one
// connection per client, as Parley's client keeps).
func (g *generator) dialQUIC(ctx context.Context, f *genFlow) error {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: f.clientIP.AsSlice()})
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: pc}
	f.qpc, f.qtr = pc, tr
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := tr.Dial(dctx, net.UDPAddrFromAddrPort(g.t.quic), proto.PinnedTLSConfig(g.t.fp, proto.RelayALPN),
		&quic.Config{EnableDatagrams: true, MaxIdleTimeout: time.Minute, KeepAlivePeriod: 15 * time.Second})
	if err != nil {
		return err
	}
	f.qc = conn
	mux := relayconn.NewMux(conn, nil)
	st, err := conn.OpenStreamSync(dctx)
	if err != nil {
		return err
	}
	if err := proto.WriteRelayFrame(st, &proto.RelayHello{Op: proto.RelayOpRelay, Token: g.t.token, Datagrams: true}); err != nil {
		return err
	}
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	var reply proto.RelayReply
	if err := proto.ReadRelayFrame(st, &reply); err != nil {
		return err
	}
	st.SetReadDeadline(time.Time{})
	if !reply.OK {
		return reply.Error
	}
	if !reply.Datagrams {
		return errors.New("relaybench: the relay stream has no datagrams")
	}
	// Direct mode: datagrams are recorded from the Mux's goroutine, with
	// no queue or reader of ours (the generator's own cost per packet).
	f.rc = relayconn.NewWith(st, mux, nil, &net.TCPAddr{IP: f.clientIP.AsSlice(), Port: 1}, net.TCPAddrFromAddrPort(g.t.quic),
		relayconn.Options{OnDatagram: func(d []byte) {
			if len(d) >= 4 {
				if l := int(binary.BigEndian.Uint16(d[2:])); 4+l <= len(d) {
					g.record(d[4:4+l], 0)
				}
			}
		}})
	return nil
}

// readStream reads a TCP or TLS flow's client side until it closes.
func (g *generator) readStream(f *genFlow) {
	defer g.wg.Done()
	var pending []byte
	tmp := make([]byte, 16<<10)
	for {
		k, err := f.stream.Read(tmp)
		if err != nil {
			return
		}
		pending = append(pending, tmp[:k]...)
		for {
			n, ok := frameLen(pending)
			if !ok || len(pending) < n {
				break
			}
			if d := pending[:n]; d[0] >= 0x40 && d[0] <= 0x7f {
				l := int(binary.BigEndian.Uint16(d[2:]))
				if 4+l <= n {
					g.record(d[4:4+l], 0)
				}
			}
			pending = pending[n:]
		}
		if len(pending) == 0 {
			pending = tmp[:0:0]
		}
	}
}

// sender builds and sends packets: UDP ones in batches per side.
type sender struct {
	g          *generator
	cb, pb     *udpbatch.Batch
	nc, np     int
	seq        []uint32
	chBuf, pay []byte
}

func (g *generator) newSender() *sender {
	s := &sender{g: g, cb: udpbatch.NewBatch(64, 4+g.size+3, 0, true), pb: udpbatch.NewBatch(64, g.size, 0, true), seq: make([]uint32, len(g.flows)),
		chBuf: make([]byte, 4+(g.size+3)&^3)}
	return s
}

func (s *sender) fill(p []byte, f *genFlow) {
	binary.BigEndian.PutUint32(p, uint32(f.id))
	binary.BigEndian.PutUint32(p[4:], s.seq[f.id])
	s.seq[f.id]++
	binary.BigEndian.PutUint64(p[8:], uint64(s.g.now()))
}

// send sends flow f's next packet (queued for a batch on UDP sockets).
func (s *sender) send(f *genFlow) {
	if f == nil {
		return
	}
	if f.both {
		s.sendDir(f, true)
		s.sendDir(f, false)
		return
	}
	s.sendDir(f, f.up)
}

func (s *sender) sendDir(f *genFlow, up bool) {
	g := s.g
	if !up {
		m := &s.pb.Msgs[s.np]
		m.Buf = m.Buf[:g.size]
		s.fill(m.Buf, f)
		m.Addr, m.Local = f.relayed, f.peerIP
		if s.np++; s.np == len(s.pb.Msgs) {
			s.flush()
		}
		return
	}
	switch {
	case g.path == PathUDP:
		m := &s.cb.Msgs[s.nc]
		m.Buf = m.Buf[:4+g.size]
		binary.BigEndian.PutUint16(m.Buf, benchChannel)
		binary.BigEndian.PutUint16(m.Buf[2:], uint16(g.size))
		s.fill(m.Buf[4:], f)
		m.Addr, m.Local = g.t.udp, f.clientIP
		if s.nc++; s.nc == len(s.cb.Msgs) {
			s.flush()
		}
	case f.rc != nil:
		b := s.chBuf
		binary.BigEndian.PutUint16(b, benchChannel)
		binary.BigEndian.PutUint16(b[2:], uint16(g.size))
		s.fill(b[4:], f)
		if _, err := f.rc.Write(b); err == nil {
			g.sent.Add(1)
		}
	case f.stream != nil:
		b := s.chBuf
		binary.BigEndian.PutUint16(b, benchChannel)
		binary.BigEndian.PutUint16(b[2:], uint16(g.size))
		s.fill(b[4:], f)
		f.stream.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := f.stream.Write(b); err == nil {
			g.sent.Add(1)
		}
	}
}

func (s *sender) flush() {
	if s.nc > 0 {
		n, _ := s.g.client.WriteBatch(s.cb, s.nc)
		s.g.sent.Add(int64(n))
		s.nc = 0
	}
	if s.np > 0 {
		n, _ := s.g.peer.WriteBatch(s.pb, s.np)
		s.g.sent.Add(int64(n))
		s.np = 0
	}
}

// paced sends every flow's packets at pps per flow for d. Each flow has
// its own random phase in the period, as independent callers do, so the
// packets of all flows together arrive like a Poisson stream (some close
// together, most apart) — not in bursts a relay could batch, and not so
// evenly spaced that none ever can. It sleeps until each packet is due
// (nanosleep on its own thread with 1 ns timer slack; time.Sleep would
// sleep ~1 ms). It records how far it fell behind.
func (g *generator) paced(ctx context.Context, pps float64, d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	s := g.newSender()
	n := len(g.slots)
	period := time.Duration(float64(time.Second) / pps)
	// order[k] is the k-th flow to send in each period, at phase[k].
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	phase := make([]time.Duration, n)
	for i := range phase {
		phase[i] = time.Duration(rng.Int64N(int64(period)))
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return phase[order[a]] < phase[order[b]] })
	dueAt := func(j int64) time.Duration { return time.Duration(j/int64(n))*period + phase[order[j%int64(n)]] }
	start := time.Now()
	var j int64
	for ctx.Err() == nil {
		el := time.Since(start)
		if el >= d {
			break
		}
		if behind := el - dueAt(j); behind > 0 {
			if b := int64(behind.Seconds() * pps * float64(n)); b > g.lagged.Load() {
				g.lagged.Store(b)
			}
		}
		for ; dueAt(j) <= el; j++ {
			s.send(g.slots[order[j%int64(n)]].Load())
		}
		s.flush()
		if wait := dueAt(j) - time.Since(start); wait > 0 {
			ts := unix.NsecToTimespec(int64(wait))
			unix.Nanosleep(&ts, nil)
		}
	}
}

// flat sends as fast as the generator can for d, round robin over flows.
func (g *generator) flat(ctx context.Context, d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := g.newSender()
	end := time.Now().Add(d)
	for i := 0; ctx.Err() == nil; i++ {
		if i%256 == 0 && time.Now().After(end) {
			break
		}
		s.send(g.slots[i%len(g.slots)].Load())
		if i%64 == 63 {
			s.flush()
		}
	}
	s.flush()
}

// close ends every flow and socket and waits for the readers.
func (g *generator) close() {
	for _, f := range g.flows {
		if f.stream != nil {
			f.stream.Close()
		}
		if f.qc != nil {
			f.qc.CloseWithError(0, "")
			f.qtr.Close()
			f.qpc.Close()
		}
	}
	for _, p := range []*udpbatch.Poller{g.cpoll, g.ppoll} {
		if p != nil {
			p.Close()
		}
	}
	g.wg.Wait()
	for _, c := range []*udpbatch.Conn{g.client, g.peer} {
		if c != nil {
			c.Close()
		}
	}
}
