package sockbuf

import (
	"net"

	"golang.org/x/sys/unix"
)

func set(c *net.UDPConn, rcv, snd int) (gotRcv, gotSnd int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0
	}
	rc.Control(func(fd uintptr) { gotRcv, gotSnd = SetFD(int(fd), rcv, snd) })
	return gotRcv, gotSnd
}

// SetFD is Set on a socket descriptor (Linux reports double the
// request: half is bookkeeping).
func SetFD(fd, rcv, snd int) (gotRcv, gotSnd int) {
	set := func(opt, force, v int) int {
		if v <= 0 {
			got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
			return got
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v)
		if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt); got >= v {
			return got
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, v) // root or CAP_NET_ADMIN only
		got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		return got
	}
	return set(unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, rcv), set(unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, snd)
}
