// Package relayconn carries one TURN-over-TCP session (RFC 8656 section
// 3.1) on a QUIC stream between a Parley client and a supernode, and can
// send its ChannelData messages (RFC 8656 section 12) as QUIC datagrams
// (RFC 9221) instead, so that a lost voice packet holds up nothing behind
// it. STUN messages (Allocate, Refresh, CreatePermission, ChannelBind)
// always use the stream: they need its reliability, and they are rare.
//
// A datagram is the relay stream's quarter stream ID as a QUIC varint (the
// RFC 9297 convention) followed by one padded ChannelData message exactly
// as it would appear on the stream. A Mux per QUIC connection hands
// datagrams to the Conn of their stream.
//
// A relay (the supernode) may take ChannelData datagrams itself
// (Options.OnDatagram): its Conn then reads TURN control messages straight
// off the stream in Read, with no goroutine or queue per stream, and the
// media never reaches Read at all. Received datagrams are passed on
// without a copy, and Write and WriteChannelData build outgoing datagrams
// without allocating (quic-go still copies each one into its own frame).
//
// Both client and supernode use it; it holds no Parley policy.
package relayconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
)

// Counters count what crossed relay connections; one Counters may be
// shared by many Muxes (a supernode's total).
type Counters struct {
	DatagramsIn, DatagramsOut       atomic.Uint64
	StreamFramesIn, StreamFramesOut atomic.Uint64
	// DatagramsDropped: for no live stream, or the reader fell behind.
	DatagramsDropped atomic.Uint64
	// TooLarge: ChannelData that did not fit a datagram and went on the stream.
	TooLarge atomic.Uint64
	// StreamFramesDropped: messages a lossy Conn's full stream queue
	// could not take (its supernode stopped acknowledging).
	StreamFramesDropped atomic.Uint64
}

// Mux reads a QUIC connection's datagrams and dispatches them to the
// relay stream they name. It stops when the connection closes.
type Mux struct {
	conn *quic.Conn
	ctr  *Counters

	mu      sync.Mutex // guards streams
	streams map[quic.StreamID]*Conn
	done    chan struct{}

	// lane, when set (NewLossyMux), carries outgoing datagrams to a
	// sender goroutine, so that a writer never blocks on quic-go's send
	// queue (32 datagrams, full when the peer stops acknowledging).
	lane chan laneItem
	// lastSend is when (unix ns) a lossy mux last handed quic-go a
	// datagram or stream data (both ack-eliciting, RFC 9000 section 13.2).
	lastSend atomic.Int64
}

// LastSend is when a lossy mux last sent a datagram or stream data on its
// connection: a live peer acknowledges it within its max_ack_delay, so a
// connection that has received nothing since is one whose peer went
// quiet. Zero for a mux that is not lossy, or before the first send.
func (m *Mux) LastSend() time.Time {
	if n := m.lastSend.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// laneItem is a datagram waiting in a lossy mux's lane, with the stream it
// belongs to (a datagram quic-go finds too large goes on that stream).
type laneItem struct {
	c   *Conn
	d   []byte
	msg int // offset of the ChannelData message in d
}

// NewMux starts dispatching conn's datagrams. ctr may be nil. The
// connection must have datagrams enabled on both sides.
func NewMux(conn *quic.Conn, ctr *Counters) *Mux {
	if ctr == nil {
		ctr = new(Counters)
	}
	m := &Mux{conn: conn, ctr: ctr, streams: map[quic.StreamID]*Conn{}, done: make(chan struct{})}
	go m.run()
	return m
}

// NewLossyMux is NewMux whose datagram sends never block: up to queue
// datagrams wait for quic-go's send queue, and more are dropped, as a
// router drops what its queue cannot hold. A client uses it so that a
// supernode that vanished (killed, unplugged: no more acknowledgements)
// cannot stall the ICE agent or the audio sender writing through it.
func NewLossyMux(conn *quic.Conn, ctr *Counters, queue int) *Mux {
	m := NewMux(conn, ctr)
	m.lane = make(chan laneItem, queue)
	go m.sendLane()
	return m
}

// sendLane hands queued datagrams to quic-go until the connection ends.
func (m *Mux) sendLane() {
	ctx := m.conn.Context()
	for {
		select {
		case it := <-m.lane:
			err := m.conn.SendDatagram(it.d)
			var tooLarge *quic.DatagramTooLargeError
			switch {
			case err == nil:
				m.ctr.DatagramsOut.Add(1)
				m.lastSend.Store(time.Now().UnixNano())
			case errors.As(err, &tooLarge):
				m.ctr.TooLarge.Add(1)
				it.c.writeStream(streamPadded(it.d[it.msg:]))
			default:
				m.ctr.DatagramsDropped.Add(1)
			}
		case <-ctx.Done():
			return
		}
	}
}

// Done closes when the mux has stopped (its connection closed).
func (m *Mux) Done() <-chan struct{} { return m.done }

func (m *Mux) run() {
	defer close(m.done)
	ctx := m.conn.Context()
	for {
		b, err := m.conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		q, n, err := quicvarint.Parse(b)
		if err != nil || !isChannelData(b[n:]) {
			m.ctr.DatagramsDropped.Add(1)
			continue
		}
		m.mu.Lock()
		c := m.streams[quic.StreamID(q*4)]
		m.mu.Unlock()
		switch {
		case c == nil:
			m.ctr.DatagramsDropped.Add(1)
		case c.onDatagram != nil:
			c.onDatagram(b[n:])
			m.ctr.DatagramsIn.Add(1)
		case c.deliver(b[n:]):
			m.ctr.DatagramsIn.Add(1)
		default:
			m.ctr.DatagramsDropped.Add(1)
		}
	}
}

// Conn is a relay stream as a net.Conn whose every Read returns whole TURN
// messages (pion's STUNConn reassembles a byte stream, so messages from
// the stream and from datagrams must never interleave mid-message).
type Conn struct {
	st     *quic.Stream
	mux    *Mux // nil: stream only
	ctr    *Counters
	local  net.Addr
	remote net.Addr
	qid    uint64

	// Queued mode (no OnDatagram): a goroutine reads the stream and the
	// mux queues datagrams; Read takes whole messages from in.
	in      chan []byte // whole messages, from the stream reader and the mux
	pending []byte      // rest of a message a short Read did not take
	done    chan struct{}
	once    sync.Once
	readErr atomic.Pointer[error]

	// Direct mode (OnDatagram set): Read reads the stream itself.
	onDatagram func([]byte)
	hdr        [4]byte
	broken     error // a read failed mid-message: the framing is lost

	wmu sync.Mutex // serialises stream writes: quic-go may interleave concurrent Writes
	// sq, on a lossy mux's Conn, queues stream writes for writeLoop, so
	// that Write never blocks on a stream its peer stopped acknowledging.
	sq chan []byte

	dmu      sync.Mutex // guards deadline
	deadline time.Time
	dlChange chan struct{}
}

// Options are the optional parts of a Conn.
type Options struct {
	// OnDatagram, when set, takes every ChannelData datagram received for
	// the stream (the message after the stream ID; the callee owns it),
	// called from the Mux's goroutine. Read then returns only what the
	// stream carries, reading it directly (no goroutine, no queue).
	OnDatagram func(msg []byte)
}

// New wraps st. With mux non-nil, ChannelData is sent as datagrams and
// datagrams for st are received. local and remote are what LocalAddr and
// RemoteAddr report (pion asserts *net.TCPAddr on the client side).
func New(st *quic.Stream, mux *Mux, ctr *Counters, local, remote net.Addr) *Conn {
	return NewWith(st, mux, ctr, local, remote, Options{})
}

// NewWith is New with options.
func NewWith(st *quic.Stream, mux *Mux, ctr *Counters, local, remote net.Addr, opts Options) *Conn {
	if ctr == nil {
		if mux != nil {
			ctr = mux.ctr
		} else {
			ctr = new(Counters)
		}
	}
	c := &Conn{
		st: st, mux: mux, ctr: ctr, local: local, remote: remote,
		qid: uint64(st.StreamID()) / 4, done: make(chan struct{}), onDatagram: opts.OnDatagram,
	}
	if c.onDatagram == nil {
		c.in = make(chan []byte, 128)
		c.dlChange = make(chan struct{}, 1)
	}
	if mux != nil {
		mux.mu.Lock()
		mux.streams[st.StreamID()] = c
		mux.mu.Unlock()
		if mux.lane != nil {
			c.sq = make(chan []byte, 256)
			go c.writeLoop()
		}
	}
	if c.onDatagram == nil {
		go c.readStream()
	}
	return c
}

// writeLoop writes a lossy Conn's queued messages to its stream in order.
func (c *Conn) writeLoop() {
	for {
		select {
		case b := <-c.sq:
			c.wmu.Lock()
			_, err := c.st.Write(b)
			c.wmu.Unlock()
			if err != nil {
				return
			}
			c.ctr.StreamFramesOut.Add(1)
			c.mux.lastSend.Store(time.Now().UnixNano())
		case <-c.done:
			return
		}
	}
}

// Datagrams reports whether ChannelData goes as datagrams.
func (c *Conn) Datagrams() bool { return c.mux != nil }

// readStream splits the stream into TURN messages.
func (c *Conn) readStream() {
	hdr := make([]byte, 4)
	for {
		if _, err := io.ReadFull(c.st, hdr); err != nil {
			c.fail(err)
			return
		}
		n, err := frameLen(hdr)
		if err != nil {
			c.fail(err)
			return
		}
		msg := make([]byte, n)
		copy(msg, hdr)
		if _, err := io.ReadFull(c.st, msg[4:]); err != nil {
			c.fail(err)
			return
		}
		select {
		case c.in <- msg:
			c.ctr.StreamFramesIn.Add(1)
		case <-c.done:
			return
		}
	}
}

func (c *Conn) fail(err error) {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	c.readErr.CompareAndSwap(nil, &err)
	c.once.Do(func() { close(c.done) })
}

// deliver queues a datagram's message (quic-go handed us a fresh slice,
// so no copy); false when full or closed.
func (c *Conn) deliver(msg []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.in <- msg:
		return true
	default:
		return false // the reader is behind: drop, as the network would
	}
}

// Inject queues msg, a whole TURN message, to be read as if it had
// arrived: a client uses it to answer pion's TURN client itself (for
// example a request it knows the supernode refuses). False when the
// Conn is closed or its queue is full.
func (c *Conn) Inject(msg []byte) bool { return c.deliver(msg) }

// ErrMalformed reports bytes on a relay stream that are not TURN messages.
var ErrMalformed = errors.New("relayconn: not a STUN or ChannelData message")

// frameLen is the length of the TURN message whose first 4 bytes are hdr:
// a STUN message (RFC 8489 section 5: 20-byte header plus length) or
// ChannelData (RFC 8656 section 12.5: 4-byte header plus length, padded to
// a multiple of 4 on streams).
func frameLen(hdr []byte) (int, error) {
	l := int(binary.BigEndian.Uint16(hdr[2:4]))
	switch {
	case hdr[0]&0xc0 == 0 && l%4 == 0:
		return 20 + l, nil
	case isChannelData(hdr):
		return 4 + (l+3)&^3, nil
	}
	return 0, ErrMalformed
}

// isChannelData: channel numbers are 0x4000-0x4FFF (RFC 8656 section
// 12); pion accepts RFC 5766's 0x4000-0x7FFF, and so do we.
func isChannelData(b []byte) bool {
	return len(b) >= 4 && b[0] >= 0x40 && b[0] <= 0x7f
}

// Split cuts data into whole TURN messages and returns them and the
// incomplete rest; it stops at the first bytes that are not a message.
func Split(data []byte) (msgs [][]byte, rest []byte, err error) {
	for len(data) >= 4 {
		n, err := frameLen(data)
		if err != nil {
			return msgs, data, err
		}
		if len(data) < n {
			break
		}
		msgs = append(msgs, data[:n])
		data = data[n:]
	}
	return msgs, data, nil
}

// Read returns (part of) one whole TURN message.
func (c *Conn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.onDatagram != nil {
		return c.readDirect(b)
	}
	for {
		c.dmu.Lock()
		dl := c.deadline
		c.dmu.Unlock()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		n, again, err := c.wait(b, timeout)
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, err
		}
	}
}

// readDirect reads one message straight off the stream (direct mode).
func (c *Conn) readDirect(b []byte) (int, error) {
	if c.broken != nil {
		return 0, c.broken
	}
	fail := func(err error) (int, error) {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			c.broken = err
		} else {
			c.broken = fmt.Errorf("relayconn: read deadline in the middle of a message: %w", err)
		}
		return 0, err
	}
	if k, err := io.ReadFull(c.st, c.hdr[:]); err != nil {
		if k == 0 && errors.Is(err, os.ErrDeadlineExceeded) { // nothing read yet: the framing holds
			return 0, err
		}
		return fail(err)
	}
	n, err := frameLen(c.hdr[:])
	if err != nil {
		c.broken = err
		return 0, err
	}
	msg := b
	if n > len(b) {
		msg = make([]byte, n) // rare: a caller with a small buffer
	}
	copy(msg, c.hdr[:])
	if _, err := io.ReadFull(c.st, msg[4:n]); err != nil {
		return fail(err)
	}
	c.ctr.StreamFramesIn.Add(1)
	if n > len(b) {
		k := copy(b, msg)
		c.pending = msg[k:n]
		return k, nil
	}
	return n, nil
}

// wait is one round of Read: a message, the end, the deadline, or (again)
// a moved deadline.
func (c *Conn) wait(b []byte, timeout <-chan time.Time) (int, bool, error) {
	select {
	case msg := <-c.in:
		n := copy(b, msg)
		c.pending = msg[n:]
		return n, false, nil
	case <-c.done:
		select {
		case msg := <-c.in: // what arrived before the end
			n := copy(b, msg)
			c.pending = msg[n:]
			return n, false, nil
		default:
		}
		if p := c.readErr.Load(); p != nil {
			return 0, false, *p
		}
		return 0, false, net.ErrClosed
	case <-timeout:
		return 0, false, os.ErrDeadlineExceeded
	case <-c.dlChange:
		return 0, true, nil // the deadline moved: look again
	}
}

// datagramBufs are scratch buffers for building datagrams.
var datagramBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1500); return &b }}

// Write sends one TURN message: ChannelData as a datagram when enabled
// and it fits, everything else (and what does not fit) on the stream.
func (c *Conn) Write(b []byte) (int, error) {
	if c.mux != nil && isChannelData(b) {
		bp := datagramBufs.Get().(*[]byte)
		d := quicvarint.Append((*bp)[:0], c.qid)
		d = append(d, b...)
		sent, err := c.sendDatagram(d)
		*bp = d[:0]
		datagramBufs.Put(bp)
		if sent {
			return len(b), nil
		}
		if err != nil {
			return 0, err
		}
	}
	return c.writeStream(b)
}

// Headroom is the space WriteChannelData needs before a message.
const Headroom = 8

// WriteChannelData sends the ChannelData message buf[Headroom:] as a
// datagram, writing the stream ID into the headroom in front of it (no
// copy, no allocation), or on the stream when datagrams are off or it is
// too large for one.
func (c *Conn) WriteChannelData(buf []byte) error {
	msg := buf[Headroom:]
	if c.mux != nil {
		l := quicvarint.Len(c.qid)
		quicvarint.Append(buf[Headroom-l:Headroom-l], c.qid)
		sent, err := c.sendDatagram(buf[Headroom-l:])
		if sent || err != nil {
			return err
		}
	}
	_, err := c.writeStream(streamPadded(msg))
	return err
}

// streamPadded is ChannelData msg padded to 4 bytes, as the stream needs
// it (RFC 8656 section 12.5); a copy when it needs padding.
func streamPadded(msg []byte) []byte {
	if pad := (4 - len(msg)%4) % 4; pad != 0 {
		msg = append(append([]byte(nil), msg...), make([]byte, pad)...)
	}
	return msg
}

// sendDatagram sends d; sent is false with a nil error when d is too
// large for a datagram (the caller uses the stream). A lossy mux queues a
// copy of d for its sender instead, or drops it when the queue is full,
// and never blocks.
func (c *Conn) sendDatagram(d []byte) (sent bool, err error) {
	if c.mux.lane != nil {
		select {
		case c.mux.lane <- laneItem{c: c, d: append([]byte(nil), d...), msg: quicvarint.Len(c.qid)}:
		default:
			c.ctr.DatagramsDropped.Add(1) // a full queue: dropped, not blocked
		}
		return true, nil
	}
	err = c.mux.conn.SendDatagram(d)
	if err == nil {
		c.ctr.DatagramsOut.Add(1)
		return true, nil
	}
	var tooLarge *quic.DatagramTooLargeError
	if errors.As(err, &tooLarge) {
		c.ctr.TooLarge.Add(1)
		return false, nil
	}
	return false, err
}

// writeStream sends one TURN message on the stream; a lossy Conn queues
// it (dropping it when the queue is full, as a full network queue would).
func (c *Conn) writeStream(b []byte) (int, error) {
	if c.sq != nil {
		select {
		case <-c.done:
			return 0, net.ErrClosed
		default:
		}
		select {
		case c.sq <- append([]byte(nil), b...):
		default:
			c.ctr.StreamFramesDropped.Add(1)
		}
		return len(b), nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.st.Write(b)
	if err == nil {
		c.ctr.StreamFramesOut.Add(1)
	}
	return n, err
}

// Close ends both directions of the stream.
func (c *Conn) Close() error {
	c.fail(net.ErrClosed)
	if c.mux != nil {
		c.mux.mu.Lock()
		if c.mux.streams[c.st.StreamID()] == c {
			delete(c.mux.streams, c.st.StreamID())
		}
		c.mux.mu.Unlock()
	}
	c.st.CancelRead(0)
	if c.sq != nil {
		c.st.SetWriteDeadline(time.Now()) // ends a writeLoop Write stuck on a dead peer
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sq != nil {
		c.st.SetWriteDeadline(time.Time{})
	}
	return c.st.Close()
}

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.onDatagram != nil {
		return c.st.SetReadDeadline(t)
	}
	c.dmu.Lock()
	c.deadline = t
	c.dmu.Unlock()
	select {
	case c.dlChange <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline bounds stream writes (datagrams never block long).
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }
