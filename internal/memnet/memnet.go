// Package memnet is an in-memory network for tests and load generators: a
// net.Listener whose connections are pairs of buffered in-memory pipes, so
// one process can hold more connections than it may open file
// descriptors, and a server's memory per connection can be measured
// without the kernel's share. Both ends support deadlines, as
// WebSocket libraries need.
package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Dial and Accept after Close.
var ErrClosed = errors.New("memnet: listener closed")

// Addr is a memnet address.
type Addr string

func (a Addr) Network() string { return "memnet" }
func (a Addr) String() string  { return string(a) }

// Listener accepts connections made by its Dial.
type Listener struct {
	addr   Addr
	seq    atomic.Int64
	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	bufMax int
}

// Listen returns a listener named name; each direction of a connection
// buffers up to bufMax bytes (0 means 1 MiB) before a write blocks.
func Listen(name string, bufMax int) *Listener {
	if bufMax <= 0 {
		bufMax = 1 << 20
	}
	return &Listener{addr: Addr(name), ch: make(chan net.Conn), done: make(chan struct{}), bufMax: bufMax}
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close stops accepting; connections already made stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the listener's name.
func (l *Listener) Addr() net.Addr { return l.addr }

// DialContext makes a connection to the listener (the signature of
// net.Dialer.DialContext; network and address are ignored).
func (l *Listener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	a2b, b2a := newPipe(l.bufMax), newPipe(l.bufMax)
	// Each connection's client end has its own address, as if from its
	// own host: 10.<n>.<n>.<n>:1 numbered in order.
	n := l.seq.Add(1)
	me := Addr(net.JoinHostPort(net.IPv4(10, byte(n>>16), byte(n>>8), byte(n)).String(), strconv.Itoa(1)))
	client := &conn{r: b2a, w: a2b, local: me, remote: l.addr}
	server := &conn{r: a2b, w: b2a, local: l.addr, remote: me}
	select {
	case l.ch <- server:
		return client, nil
	case <-l.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pipe is one direction: a byte buffer with a bound.
type pipe struct {
	mu       sync.Mutex // guards the fields below
	cond     *sync.Cond
	buf      []byte
	max      int
	closed   bool // the writer closed: reads drain, then EOF
	broken   bool // the reader closed: writes fail
	rdl, wdl time.Time
}

func newPipe(max int) *pipe {
	p := &pipe{max: max}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// wait blocks until woken or the deadline passes (a timer wakes it).
func (p *pipe) wait(deadline time.Time) {
	if deadline.IsZero() {
		p.cond.Wait()
		return
	}
	t := time.AfterFunc(time.Until(deadline), func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	p.cond.Wait()
	t.Stop()
}

func expired(d time.Time) bool { return !d.IsZero() && !time.Now().Before(d) }

func (p *pipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 {
		if p.closed {
			return 0, io.EOF
		}
		if p.broken {
			return 0, net.ErrClosed
		}
		if expired(p.rdl) {
			return 0, os.ErrDeadlineExceeded
		}
		p.wait(p.rdl)
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.buf = nil // an idle connection holds no buffer
	}
	p.cond.Broadcast()
	return n, nil
}

func (p *pipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		if p.closed || p.broken {
			return n, net.ErrClosed
		}
		if expired(p.wdl) {
			return n, os.ErrDeadlineExceeded
		}
		room := p.max - len(p.buf)
		if room <= 0 {
			p.wait(p.wdl)
			continue
		}
		k := min(room, len(b))
		p.buf = append(p.buf, b[:k]...)
		b = b[k:]
		n += k
		p.cond.Broadcast()
	}
	return n, nil
}

func (p *pipe) set(read bool, t time.Time) {
	p.mu.Lock()
	if read {
		p.rdl = t
	} else {
		p.wdl = t
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// conn is one end of a connection.
type conn struct {
	r, w          *pipe
	local, remote net.Addr
	once          sync.Once
}

func (c *conn) Read(b []byte) (int, error)  { return c.r.read(b) }
func (c *conn) Write(b []byte) (int, error) { return c.w.write(b) }

func (c *conn) Close() error {
	c.once.Do(func() {
		c.w.mu.Lock()
		c.w.closed = true
		c.w.cond.Broadcast()
		c.w.mu.Unlock()
		c.r.mu.Lock()
		c.r.broken = true
		c.r.buf = nil
		c.r.cond.Broadcast()
		c.r.mu.Unlock()
	})
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.r.set(true, t)
	c.w.set(false, t)
	return nil
}
func (c *conn) SetReadDeadline(t time.Time) error  { c.r.set(true, t); return nil }
func (c *conn) SetWriteDeadline(t time.Time) error { c.w.set(false, t); return nil }
