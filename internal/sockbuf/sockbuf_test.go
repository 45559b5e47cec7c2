package sockbuf_test

import (
	"net"
	"runtime"
	"testing"

	"github.com/parley-voice/parley/internal/sockbuf"
)

// A socket from Net holds a data channel's window: the kernel grants at
// least the size asked (we run as root: beyond rmem_max needs
// CAP_NET_ADMIN, which Set uses).
func TestNetBuffers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the granted sizes are read back on Linux only")
	}
	n := &sockbuf.Net{Size: 3 << 20}
	c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rcv, snd := sockbuf.Set(c.(*net.UDPConn), 0, 0) // 0: read back, change nothing
	if rcv < 3<<20 || snd < 3<<20 {
		t.Fatalf("buffers %d / %d bytes, want >= %d", rcv, snd, 3<<20)
	}
	if _, err := n.Interfaces(); err != nil {
		t.Fatal(err)
	}
}
