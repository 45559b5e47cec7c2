//go:build linux

package udpbatch

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"github.com/parley-voice/parley/internal/sockbuf"
	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr (recvmmsg(2)).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// Batch holds up to len(Msgs) datagrams and the kernel structures that
// describe them, allocated once.
type Batch struct {
	Msgs []Msg
	// Headroom is the number of bytes left free at the front of each
	// buffer on reads (see Msg.Buf).
	Headroom int
	hdrs     []mmsghdr
	iovs     []unix.Iovec
	names    []unix.RawSockaddrInet6
	oob      []byte
	pktinfo  bool
}

// oobSize holds an IP_PKTINFO cmsg (16-byte header + 12-byte in_pktinfo,
// aligned: 32) and an SCM_TIMESTAMPNS one (16 + 16).
const oobSize = 64

// NewBatch makes a batch of n messages with buffers of size bytes (plus
// headroom). With pktinfo, reads report and writes set each datagram's
// local IPv4 address (IP_PKTINFO; the socket must have it enabled,
// see Conn.EnablePktinfo), and reads report kernel receive times when the
// socket has them enabled (Conn.EnableTimestamps).
func NewBatch(n, size, headroom int, pktinfo bool) *Batch {
	b := &Batch{
		Msgs: make([]Msg, n), Headroom: headroom,
		hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n),
		pktinfo: pktinfo,
	}
	if pktinfo {
		b.oob = make([]byte, n*oobSize)
	}
	backing := make([]byte, n*(size+headroom))
	for i := range b.Msgs {
		b.Msgs[i].Buf = backing[i*(size+headroom) : (i+1)*(size+headroom) : (i+1)*(size+headroom)]
	}
	return b
}

// Conn is a nonblocking UDP socket outside Go's poller. Its methods never
// block and are safe for concurrent use; Close waits for calls in flight.
type Conn struct {
	mu    sync.RWMutex // guards fd against Close (read-held by every call)
	fd    int          // -1 once closed
	local netip.AddrPort
	v6    bool
}

// Listen opens a UDP socket bound to addr ("udp4" family for IPv4
// addresses, "udp6" otherwise).
func Listen(addr netip.AddrPort) (*Conn, error) {
	domain := unix.AF_INET
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udpbatch: socket: %w", err)
	}
	var sa unix.Sockaddr
	if domain == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().Unmap().As4()}
	} else {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("udpbatch: IPV6_V6ONLY: %w", err)
		}
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: bind %s: %w", addr, err)
	}
	return newConn(fd)
}

// Detach takes the socket of pc (a *net.UDPConn, or anything whose
// SyscallConn is a UDP socket) out of Go's poller: it duplicates the
// descriptor and closes pc. On error pc is left as it was.
func Detach(pc net.PacketConn) (*Conn, error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("udpbatch: %T is not a socket", pc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var operr error
	if err := rc.Control(func(fd uintptr) {
		var typ int
		if typ, operr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); operr != nil {
			return
		}
		if typ != unix.SOCK_DGRAM {
			operr = fmt.Errorf("udpbatch: socket type %d is not SOCK_DGRAM", typ)
			return
		}
		nfd, operr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if operr != nil {
		return nil, fmt.Errorf("udpbatch: detach: %w", operr)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("udpbatch: detach: %w", err)
	}
	pc.Close() // Go removes its descriptor from its poller; ours stays open
	return newConn(nfd)
}

func newConn(fd int) (*Conn, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: getsockname: %w", err)
	}
	c := &Conn{fd: fd}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		c.local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		c.local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
		c.v6 = true
	default:
		unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: socket family %T", sa)
	}
	return c, nil
}

// LocalAddr is the bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// UDPAddr is the bound address as a *net.UDPAddr.
func (c *Conn) UDPAddr() *net.UDPAddr { return net.UDPAddrFromAddrPort(c.local) }

// SetBuffers asks for receive and send buffers of rcv and snd bytes
// (0 leaves one as it is). Beyond net.core.[rw]mem_max it needs
// CAP_NET_ADMIN (SO_RCVBUFFORCE), as quic-go does for its own socket; it
// returns the sizes the kernel granted (Linux reports double the request).
func (c *Conn) SetBuffers(rcv, snd int) (gotRcv, gotSnd int, err error) {
	err = c.control(func(fd int) error {
		gotRcv, gotSnd = sockbuf.SetFD(fd, rcv, snd)
		return nil
	})
	return gotRcv, gotSnd, err
}

// EnablePktinfo turns on IP_PKTINFO (IPv4): reads learn each datagram's
// destination address and writes may choose their source address.
func (c *Conn) EnablePktinfo() error {
	return c.control(func(fd int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1) })
}

// EnableTimestamps turns on SO_TIMESTAMPNS: reads with a pktinfo Batch
// learn when the kernel received each datagram (Msg.Time), which does not
// depend on when the reader got to run.
func (c *Conn) EnableTimestamps() error {
	return c.control(func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) })
}

func (c *Conn) control(f func(fd int) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return ErrClosed
	}
	return f(c.fd)
}

// Close closes the socket once no call is in flight.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// putSockaddr writes ap into sa and returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort, v6 bool) uint32 {
	a := ap.Addr()
	if !v6 {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		s4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], ap.Port())
		s4.Addr = a.Unmap().As4()
		s4.Zero = [8]byte{}
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	sa.Flowinfo = 0
	sa.Addr = a.As16()
	sa.Scope_id = 0
	return unix.SizeofSockaddrInet6
}

// getSockaddr reads the address the kernel wrote into sa.
func getSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// ReadBatch receives up to len(b.Msgs) datagrams without waiting. It
// returns 0 and no error when none is queued.
func (c *Conn) ReadBatch(b *Batch) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return 0, ErrClosed
	}
	for i := range b.Msgs {
		m := &b.Msgs[i]
		buf := m.Buf[b.Headroom:]
		b.iovs[i] = unix.Iovec{Base: &buf[0]}
		b.iovs[i].SetLen(len(buf))
		h := &b.hdrs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&b.names[i])), Namelen: unix.SizeofSockaddrInet6, Iov: &b.iovs[i], Iovlen: 1}
		if b.pktinfo {
			h.Control = &b.oob[i*oobSize]
			h.SetControllen(oobSize)
		}
	}
	var n uintptr
	var errno syscall.Errno
	for {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if errno != unix.EINTR {
			break
		}
	}
	if errno == unix.EAGAIN {
		return 0, nil
	}
	if errno != 0 {
		return 0, fmt.Errorf("udpbatch: recvmmsg: %w", errno)
	}
	for i := 0; i < int(n); i++ {
		m := &b.Msgs[i]
		m.N = int(b.hdrs[i].n)
		m.Addr = getSockaddr(&b.names[i])
		m.Local, m.Time = netip.Addr{}, 0
		if b.pktinfo {
			parseOOB(m, b.oob[i*oobSize:i*oobSize+int(b.hdrs[i].hdr.Controllen)])
		}
	}
	return int(n), nil
}

// parseOOB reads IP_PKTINFO and SCM_TIMESTAMPNS from control messages.
func parseOOB(m *Msg, oob []byte) {
	for len(oob) >= unix.SizeofCmsghdr {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(cm.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return
		}
		data := oob[unix.SizeofCmsghdr:l]
		switch {
		case cm.Level == unix.IPPROTO_IP && cm.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			m.Local = netip.AddrFrom4((*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0])).Addr)
		case cm.Level == unix.SOL_SOCKET && cm.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			m.Time = (*unix.Timespec)(unsafe.Pointer(&data[0])).Nano()
		}
		al := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if al > len(oob) {
			return
		}
		oob = oob[al:]
	}
}

// WriteBatch sends b.Msgs[:n], each Buf to its Addr, without waiting. It
// returns how many were sent; when the socket's send buffer is full the
// rest are not sent (n > 0 and a nil error: the caller drops them, as
// the network would).
func (c *Conn) WriteBatch(b *Batch, n int) (int, error) {
	if n == 0 {
		return 0, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return 0, ErrClosed
	}
	for i := 0; i < n; i++ {
		m := &b.Msgs[i]
		if len(m.Buf) == 0 {
			b.iovs[i] = unix.Iovec{}
		} else {
			b.iovs[i] = unix.Iovec{Base: &m.Buf[0]}
			b.iovs[i].SetLen(len(m.Buf))
		}
		h := &b.hdrs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&b.names[i])), Iov: &b.iovs[i], Iovlen: 1}
		h.Namelen = putSockaddr(&b.names[i], m.Addr, c.v6)
		if b.pktinfo && m.Local.Is4() {
			oob := b.oob[i*oobSize : (i+1)*oobSize]
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			cm.Level, cm.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
			cm.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.SizeofCmsghdr]))
			*pi = unix.Inet4Pktinfo{Spec_dst: m.Local.As4()}
			h.Control = &oob[0]
			h.SetControllen(unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		}
	}
	sent := 0
	for sent < n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&b.hdrs[sent])), uintptr(n-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return sent, nil
		case errno != 0:
			// One bad destination fails only its own message: skip it.
			if sent+1 < n {
				sent++
				continue
			}
			return sent, fmt.Errorf("udpbatch: sendmmsg: %w", errno)
		}
		sent += int(r)
	}
	return sent, nil
}

// WriteTo sends one datagram without waiting. A full send buffer drops it
// (no error), as the network would.
func (c *Conn) WriteTo(p []byte, to netip.AddrPort) error {
	var sa unix.RawSockaddrInet6
	l := putSockaddr(&sa, to, c.v6)
	var base unsafe.Pointer
	if len(p) > 0 {
		base = unsafe.Pointer(&p[0])
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return ErrClosed
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(base), uintptr(len(p)), unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(l))
		switch errno {
		case 0, unix.EAGAIN:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("udpbatch: sendto %s: %w", to, errno)
	}
}

// ReadFrom receives one datagram without waiting; ok is false when none
// is queued.
func (c *Conn) ReadFrom(p []byte) (n int, from netip.AddrPort, ok bool, err error) {
	var sa unix.RawSockaddrInet6
	l := uint32(unix.SizeofSockaddrInet6)
	var base unsafe.Pointer
	if len(p) > 0 {
		base = unsafe.Pointer(&p[0])
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return 0, from, false, ErrClosed
	}
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(base), uintptr(len(p)), unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)))
		switch errno {
		case 0:
			return int(r), getSockaddr(&sa), true, nil
		case unix.EAGAIN:
			return 0, from, false, nil
		case unix.EINTR:
			continue
		}
		return 0, from, false, fmt.Errorf("udpbatch: recvfrom: %w", errno)
	}
}
