package supernode

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/udpbatch"
)

// dataplane is the TURN UDP relay's per-packet path (Linux; elsewhere
// pion/turn does everything). One goroutine waits on the TURN UDP listener
// and every relay socket of its allocations at once (udpbatch.Poller),
// reads them in batches and forwards by table lookup, without allocating:
//
//	client ──ChannelData──▶ listener ─(client, channel)→ allocation ─sendto──▶ peer
//	peer ────datagram────▶ relay socket ─(peer)→ channel ─ChannelData, sendmmsg──▶ client
//
// STUN and TURN control (Allocate, Refresh, CreatePermission, ChannelBind,
// Send indications) and packets of peers without a channel go to
// pion/turn, which keeps allocations, auth, permissions and lifetimes;
// its events (OnChannelCreated and friends) keep our tables.
type dataplane struct {
	s    *Server
	poll *udpbatch.Poller
	lis  *udpbatch.Conn
	// pion reads the listener through lisPC: what the loop leaves over.
	lisPC *slowListener

	mu      sync.RWMutex // guards the maps below (the loop read-holds it per round)
	tags    map[uint32]*relayConn
	nextTag uint32                        // below 2^31-1 (udpbatch's limit)
	clients map[netip.AddrPort]*relayConn // a UDP client -> its allocation

	// The loop's own (no lock).
	cin, pin *udpbatch.Batch // from clients (listener), from peers (relay sockets)
	out      *udpbatch.Batch // ChannelData to clients, sent once per round
	outBufs  [][]byte        // the full buffers behind out.Msgs
	nout     int
	free     [][]byte // spare peer-read buffers
	fwd      int64    // packets forwarded this round

	done chan struct{}
	once sync.Once
}

const (
	clientBatch = 64 // datagrams per recvmmsg on the listener
	peerBatch   = 8  // per recvmmsg on a relay socket (voice: rarely more than 1 queued)
	outBatch    = 128
	pollBatch   = 256 // ready sockets per wake-up
	lisTag      = 0
)

// newDataplane takes the TURN UDP listener pc over. It returns nil (and
// leaves pc alone) where the platform or pc does not allow it.
//
// With GOMAXPROCS of 2 or more the loop runs on its own thread blocked in
// epoll_wait, like a C event loop: a wake-up costs one system call and one
// context switch. With one P that would make the scheduler take the P
// from the waiting thread and hand it back on every wake-up, so the loop
// waits in Go's poller instead (a wake-up then also costs a park and
// unpark, and the scheduler's monitor thread wakes with it: measured
// ~25% more CPU per packet at 50k packets/s; supernode/README.md).
func newDataplane(s *Server, pc net.PacketConn, blocking bool) *dataplane {
	newPoller := udpbatch.NewPoller
	if blocking {
		newPoller = udpbatch.NewBlockingPoller
	}
	poll, err := newPoller(pollBatch)
	if err != nil {
		return nil
	}
	lis, err := udpbatch.Detach(pc)
	if err != nil {
		poll.Close()
		return nil
	}
	lis.SetBuffers(listenerBuffer, listenerBuffer)
	if err := poll.Add(lis, lisTag); err != nil {
		poll.Close()
		lis.Close()
		return nil
	}
	d := &dataplane{
		s: s, poll: poll, lis: lis,
		tags: map[uint32]*relayConn{}, clients: map[netip.AddrPort]*relayConn{},
		cin: udpbatch.NewBatch(clientBatch, 2048, 0, false),
		pin: udpbatch.NewBatch(peerBatch, maxDatagram+3, relayHeadroom, false),
		out: udpbatch.NewBatch(outBatch, 0, 0, false), outBufs: make([][]byte, outBatch),
		done: make(chan struct{}),
	}
	// Peer reads keep 3 bytes past each buffer's length for ChannelData's
	// padding (putChannelData).
	for i := range d.pin.Msgs {
		d.pin.Msgs[i].Buf = d.pin.Msgs[i].Buf[:relayHeadroom+maxDatagram]
	}
	for range outBatch {
		d.free = append(d.free, make([]byte, relayHeadroom+maxDatagram, relayHeadroom+maxDatagram+3))
	}
	d.lisPC = &slowListener{d: d, in: make(chan slowPacket, 256), local: lis.UDPAddr(), closed: make(chan struct{})}
	return d
}

// run is the loop; it ends when the listener is closed.
func (d *dataplane) run() {
	defer close(d.done)
	runtime.LockOSThread() // a blocking poller waits on this thread
	defer runtime.UnlockOSThread()
	for {
		tags, err := d.poll.Wait()
		if err != nil {
			return
		}
		now := time.Now()
		d.mu.RLock()
		for _, tag := range tags {
			if tag == lisTag {
				d.fromClients(now)
			} else if rc := d.tags[tag]; rc != nil {
				d.fromPeers(rc, now)
			}
		}
		d.mu.RUnlock()
		d.flush()
		if d.fwd > 0 {
			d.s.stats.fastUDP.Add(d.fwd)
			d.fwd = 0
		}
		d.s.gov.busyNanos.Add(int64(time.Since(now)))
	}
}

// fromClients forwards the listener's ChannelData to peers; the rest
// (STUN, unknown channels) goes to pion. A few batches per round, so
// relay sockets get their turn.
func (d *dataplane) fromClients(now time.Time) {
	for range 4 {
		n, err := d.lis.ReadBatch(d.cin)
		if err != nil || n == 0 {
			return
		}
		for i := 0; i < n; i++ {
			m := &d.cin.Msgs[i]
			b := m.Payload(0)
			if len(b) >= channelDataHeader && b[0] >= 0x40 && b[0] <= 0x7f { // ChannelData (RFC 8656 section 12)
				num, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
				if rc := d.clients[m.Addr]; rc != nil && channelDataHeader+l <= len(b) {
					if ch := rc.chans.Load().byNum[num]; ch != nil {
						rc.sendToPeer(b[channelDataHeader:channelDataHeader+l], ch, now)
						d.fwd++
						continue
					}
				}
			}
			d.lisPC.hand(b, m.Addr)
		}
		if n < len(d.cin.Msgs) {
			return
		}
	}
}

// fromPeers forwards what peers sent to rc's relay socket to its client
// as ChannelData (queued for the round's sendmmsg); packets of peers
// without a channel go to pion (a Data indication, or dropped there).
func (d *dataplane) fromPeers(rc *relayConn, now time.Time) {
	n, err := rc.sock.ReadBatch(d.pin)
	if err != nil || n == 0 {
		return
	}
	client := rc.client
	t := rc.chans.Load()
	for i := 0; i < n; i++ {
		m := &d.pin.Msgs[i]
		ch := t.byPeer[m.Addr]
		if ch == nil || !client.IsValid() {
			rc.hand(m.Payload(relayHeadroom), m.Addr)
			continue
		}
		if !rc.count((m.N+3)&^3+channelDataHeader+rc.udpOverhead(), now) {
			continue
		}
		if d.nout == len(d.out.Msgs) || len(d.free) == 0 {
			d.flush()
		}
		buf := m.Buf
		msg := putChannelData(buf[:relayHeadroom+m.N], ch.number)
		d.out.Msgs[d.nout] = udpbatch.Msg{Buf: msg[relayHeadroom-channelDataHeader:], Addr: client}
		d.outBufs[d.nout] = buf
		d.nout++
		d.fwd++
		// The buffer now belongs to out; give the read slot a spare.
		m.Buf = d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
	}
}

// flush sends the queued ChannelData to clients in one sendmmsg.
func (d *dataplane) flush() {
	if d.nout == 0 {
		return
	}
	sent, _ := d.lis.WriteBatch(d.out, d.nout)
	if dropped := d.nout - sent; dropped > 0 {
		d.s.stats.sendErrors.Add(int64(dropped))
	}
	for i := 0; i < d.nout; i++ {
		d.free = append(d.free, d.outBufs[i])
		d.outBufs[i] = nil
		d.out.Msgs[i].Buf = nil
	}
	d.nout = 0
}

// addRelay puts a relay socket into the loop.
func (d *dataplane) addRelay(rc *relayConn) error {
	d.mu.Lock()
	for {
		d.nextTag = (d.nextTag + 1) % (1<<31 - 1)
		if d.nextTag == lisTag {
			continue
		}
		if _, used := d.tags[d.nextTag]; !used {
			break
		}
	}
	rc.tag = d.nextTag
	d.tags[rc.tag] = rc
	d.mu.Unlock()
	if err := d.poll.Add(rc.sock, rc.tag); err != nil {
		d.mu.Lock()
		delete(d.tags, rc.tag)
		d.mu.Unlock()
		return err
	}
	return nil
}

// removeRelay takes a closing relay socket out of the loop.
func (d *dataplane) removeRelay(rc *relayConn) {
	d.poll.Remove(rc.sock)
	d.mu.Lock()
	if d.tags[rc.tag] == rc {
		delete(d.tags, rc.tag)
	}
	if rc.client.IsValid() && d.clients[rc.client] == rc {
		delete(d.clients, rc.client)
	}
	d.mu.Unlock()
}

// setClient links a UDP client's address to its allocation (nil: unlink).
func (d *dataplane) setClient(client netip.AddrPort, rc *relayConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rc == nil {
		if old := d.clients[client]; old != nil {
			delete(d.clients, client)
			old.client = netip.AddrPort{}
		}
		return
	}
	if rc.closed.Load() {
		return
	}
	d.clients[client] = rc
	rc.client = client
}

// close stops the loop and closes the listener (relay sockets close with
// their allocations).
func (d *dataplane) close() {
	d.once.Do(func() {
		d.poll.Close()
		close(d.lisPC.closed)
	})
}

// wait waits for the loop to end and closes the listener socket.
func (d *dataplane) wait() {
	<-d.done
	d.lis.Close()
}

// hand gives pion a packet the fast path does not take (a copy: the
// loop's buffer is reused). When pion is behind it is dropped.
func (c *relayConn) hand(b []byte, from netip.AddrPort) {
	select {
	case c.slow <- slowPacket{b: append([]byte(nil), b...), from: net.UDPAddrFromAddrPort(from)}:
	default:
		c.s.stats.slowDrops.Add(1)
	}
}

// slowListener is the TURN UDP listener as pion sees it: it reads what the
// loop hands over and writes straight to the socket.
type slowListener struct {
	d        *dataplane
	in       chan slowPacket
	local    *net.UDPAddr
	closed   chan struct{}
	deadline atomic.Pointer[time.Time]
}

func (l *slowListener) hand(b []byte, from netip.AddrPort) {
	select {
	case l.in <- slowPacket{b: append([]byte(nil), b...), from: net.UDPAddrFromAddrPort(from)}:
	default:
		l.d.s.stats.slowDrops.Add(1)
	}
}

func (l *slowListener) ReadFrom(p []byte) (int, net.Addr, error) {
	timeout, stop, passed := deadlineTimer(l.deadline.Load())
	defer stop()
	if passed {
		return 0, nil, os.ErrDeadlineExceeded
	}
	select {
	case pk := <-l.in:
		return copy(p, pk.b), pk.from, nil
	case <-l.closed:
		return 0, nil, net.ErrClosed
	case <-timeout:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (l *slowListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	if err := l.d.lis.WriteTo(p, addrPort(addr)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close stops the data plane (pion's Server.Close calls it).
func (l *slowListener) Close() error {
	l.d.close()
	return nil
}

func (l *slowListener) LocalAddr() net.Addr { return l.local }

func (l *slowListener) SetDeadline(t time.Time) error { return l.SetReadDeadline(t) }

func (l *slowListener) SetReadDeadline(t time.Time) error {
	l.deadline.Store(&t)
	return nil
}

func (l *slowListener) SetWriteDeadline(time.Time) error { return nil } // writes never wait
