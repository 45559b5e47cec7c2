//go:build !linux

package sockbuf

import "net"

func set(c *net.UDPConn, rcv, snd int) (gotRcv, gotSnd int) {
	if rcv > 0 {
		c.SetReadBuffer(rcv)
	}
	if snd > 0 {
		c.SetWriteBuffer(snd)
	}
	return 0, 0
}
