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
// Both client and supernode use it; it holds no Parley policy.
package relayconn

import (
	"encoding/binary"
	"errors"
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
}

// Mux reads a QUIC connection's datagrams and dispatches them to the
// relay stream they name. It stops when the connection closes.
type Mux struct {
	conn *quic.Conn
	ctr  *Counters

	mu      sync.Mutex // guards streams
	streams map[quic.StreamID]*Conn
	done    chan struct{}
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
		if c == nil || !c.deliver(b[n:]) {
			m.ctr.DatagramsDropped.Add(1)
			continue
		}
		m.ctr.DatagramsIn.Add(1)
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

	in      chan []byte // whole messages, from the stream reader and the mux
	pending []byte      // rest of a message a short Read did not take
	done    chan struct{}
	once    sync.Once
	readErr atomic.Pointer[error]

	wmu sync.Mutex // serialises stream writes: quic-go may interleave concurrent Writes

	dmu      sync.Mutex // guards deadline
	deadline time.Time
	dlChange chan struct{}
}

// New wraps st. With mux non-nil, ChannelData is sent as datagrams and
// datagrams for st are received. local and remote are what LocalAddr and
// RemoteAddr report (pion asserts *net.TCPAddr on the client side).
func New(st *quic.Stream, mux *Mux, ctr *Counters, local, remote net.Addr) *Conn {
	if ctr == nil {
		if mux != nil {
			ctr = mux.ctr
		} else {
			ctr = new(Counters)
		}
	}
	c := &Conn{
		st: st, mux: mux, ctr: ctr, local: local, remote: remote,
		qid: uint64(st.StreamID()) / 4,
		in:  make(chan []byte, 128), done: make(chan struct{}), dlChange: make(chan struct{}, 1),
	}
	if mux != nil {
		mux.mu.Lock()
		mux.streams[st.StreamID()] = c
		mux.mu.Unlock()
	}
	go c.readStream()
	return c
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

// deliver queues a datagram's message; false when full or closed.
func (c *Conn) deliver(msg []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.in <- append([]byte(nil), msg...):
		return true
	default:
		return false // the reader is behind: drop, as the network would
	}
}

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

// Write sends one TURN message: ChannelData as a datagram when enabled
// and it fits, everything else (and what does not fit) on the stream.
func (c *Conn) Write(b []byte) (int, error) {
	if c.mux != nil && isChannelData(b) {
		d := make([]byte, 0, quicvarint.Len(c.qid)+len(b))
		d = quicvarint.Append(d, c.qid)
		d = append(d, b...)
		err := c.mux.conn.SendDatagram(d)
		if err == nil {
			c.ctr.DatagramsOut.Add(1)
			return len(b), nil
		}
		var tooLarge *quic.DatagramTooLargeError
		if !errors.As(err, &tooLarge) {
			return 0, err
		}
		c.ctr.TooLarge.Add(1)
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
	c.wmu.Lock()
	defer c.wmu.Unlock()
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
