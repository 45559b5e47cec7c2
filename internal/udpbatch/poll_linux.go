//go:build linux

package udpbatch

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller is an epoll set of Conns whose readiness is waited for inside Go's
// own poller: the epoll descriptor itself is registered with the runtime,
// so a goroutine blocked in Wait parks like any reader and thousands of
// sockets cost one wake-up.
type Poller struct {
	f      *os.File
	rc     syscall.RawConn
	events []unix.EpollEvent
	ready  []uint32
	waitFn func(uintptr) bool
	err    error

	mu   sync.Mutex // guards conns
	tags map[*Conn]uint32
}

// NewPoller makes an empty set that reports up to batch ready sockets per
// Wait.
func NewPoller(batch int) (*Poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("udpbatch: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil { // so os.NewFile makes it pollable
		unix.Close(ep)
		return nil, fmt.Errorf("udpbatch: epoll nonblock: %w", err)
	}
	f := os.NewFile(uintptr(ep), "udpbatch-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &Poller{f: f, rc: rc, events: make([]unix.EpollEvent, batch), ready: make([]uint32, 0, batch), tags: map[*Conn]uint32{}}
	p.waitFn = p.poll
	return p, nil
}

// Add watches c for readability (level-triggered); Wait reports tag
// while c has datagrams queued.
func (p *Poller) Add(c *Conn, tag uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ctl(func(ep int) error {
		return c.control(func(fd int) error {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(tag)}
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
				return fmt.Errorf("udpbatch: epoll add: %w", err)
			}
			p.tags[c] = tag
			return nil
		})
	})
}

// ctl runs f with the epoll descriptor, which cannot be closed meanwhile.
func (p *Poller) ctl(f func(ep int) error) error {
	var err error
	if cerr := p.rc.Control(func(fd uintptr) { err = f(int(fd)) }); cerr != nil {
		return ErrClosed
	}
	return err
}

// Remove stops watching c. Call it before closing c.
func (p *Poller) Remove(c *Conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.tags[c]; !ok {
		return nil
	}
	delete(p.tags, c)
	return p.ctl(func(ep int) error {
		return c.control(func(fd int) error {
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
				return fmt.Errorf("udpbatch: epoll del: %w", err)
			}
			return nil
		})
	})
}

// Wait blocks until at least one watched socket is readable and returns
// their tags (valid until the next Wait). It returns ErrClosed after
// Close. Only one goroutine may Wait.
func (p *Poller) Wait() ([]uint32, error) {
	p.ready = p.ready[:0]
	p.err = nil
	if err := p.rc.Read(p.waitFn); err != nil {
		return nil, ErrClosed
	}
	return p.ready, p.err
}

// poll is the RawConn.Read callback: collect ready tags, or park.
func (p *Poller) poll(ep uintptr) bool {
	for {
		n, err := unix.EpollWait(int(ep), p.events, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.err = fmt.Errorf("udpbatch: epoll_wait: %w", err)
			return true
		}
		if n == 0 {
			return false // nothing ready: park in Go's poller until the set is readable
		}
		for i := 0; i < n; i++ {
			p.ready = append(p.ready, uint32(p.events[i].Fd))
		}
		return true
	}
}

// Close releases the set and wakes a goroutine blocked in Wait (which
// then returns ErrClosed). Watched Conns stay open; Add and Remove then
// return ErrClosed.
func (p *Poller) Close() error { return p.f.Close() }
