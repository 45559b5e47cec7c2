//go:build linux

package udpbatch

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller is an epoll set of Conns. By default its readiness is waited for
// inside Go's own poller: the epoll descriptor itself is registered with
// the runtime, so a goroutine blocked in Wait parks like any reader and
// thousands of sockets cost one wake-up. A blocking Poller
// (NewBlockingPoller) waits in epoll_wait on the caller's thread instead.
type Poller struct {
	f      *os.File
	rc     syscall.RawConn
	events []unix.EpollEvent
	ready  []uint32
	waitFn func(uintptr) bool
	err    error

	mu   sync.Mutex // guards conns
	tags map[*Conn]uint32

	// Blocking mode.
	blocking bool
	ep, efd  int          // the epoll and eventfd descriptors
	closing  atomic.Bool  // Close has begun
	life     sync.RWMutex // read-held while ep is in use; Close write-holds it to close ep
	closed   bool         // guarded by life (written under its write lock)
}

// wakeTag is the eventfd's tag in a blocking Poller; Add's tags stay below it.
const wakeTag = 1<<31 - 1

// NewBlockingPoller makes a Poller whose Wait blocks its thread in
// epoll_wait, as a C event loop does: one system call and one context
// switch per wake-up. Through Go's poller a wake-up also costs the
// scheduler's park and unpark and, when every P goes idle, its monitor
// thread's sleep and wake. Use it from a goroutine locked to its thread
// (runtime.LockOSThread) in a process with GOMAXPROCS of 2 or more, so the
// scheduler leaves the thread's P alone while it waits. Close wakes Wait
// through an eventfd.
func NewBlockingPoller(batch int) (*Poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("udpbatch: epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("udpbatch: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakeTag)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(ep)
		unix.Close(efd)
		return nil, fmt.Errorf("udpbatch: epoll add eventfd: %w", err)
	}
	return &Poller{blocking: true, ep: ep, efd: efd, events: make([]unix.EpollEvent, batch),
		ready: make([]uint32, 0, batch), tags: map[*Conn]uint32{}}, nil
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
// while c has datagrams queued. Tags are below 2^31-1.
func (p *Poller) Add(c *Conn, tag uint32) error {
	if tag >= wakeTag {
		return fmt.Errorf("udpbatch: tag %d too large", tag)
	}
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
	if p.blocking {
		p.life.RLock()
		defer p.life.RUnlock()
		if p.closed {
			return ErrClosed
		}
		return f(p.ep)
	}
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
	if p.blocking {
		return p.waitBlocking()
	}
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

// waitBlocking is Wait of a blocking Poller.
func (p *Poller) waitBlocking() ([]uint32, error) {
	p.life.RLock()
	defer p.life.RUnlock()
	for !p.closed && !p.closing.Load() {
		n, err := unix.EpollWait(p.ep, p.events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("udpbatch: epoll_wait: %w", err)
		}
		for i := 0; i < n; i++ {
			if tag := uint32(p.events[i].Fd); tag != wakeTag {
				p.ready = append(p.ready, tag)
			}
		}
		if len(p.ready) > 0 {
			return p.ready, nil
		}
	}
	return nil, ErrClosed
}

// Close releases the set and wakes a goroutine blocked in Wait (which
// then returns ErrClosed). Watched Conns stay open; Add and Remove then
// return ErrClosed.
func (p *Poller) Close() error {
	if !p.blocking {
		return p.f.Close()
	}
	if p.closing.Swap(true) {
		return nil
	}
	one := [8]byte{1}
	unix.Write(p.efd, one[:]) // wakes epoll_wait, which then sees closing and leaves
	p.life.Lock()
	defer p.life.Unlock()
	p.closed = true
	unix.Close(p.ep)
	unix.Close(p.efd)
	return nil
}
