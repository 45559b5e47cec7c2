package relaybench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"

	"github.com/parley-voice/parley/internal/udpbatch"
)

// Forwarder is the floor `bench relay --compare` measures against: a
// relay that only forwards — ChannelData from a client becomes a datagram
// from the flow's relay socket to its peer and back — with recvmmsg and
// sendmmsg (internal/udpbatch) and no TURN control, budget or policy.
// Flows are set up by a bind datagram from the client:
//
//	0x00 'B' flow(4) peer-IPv4(4) peer-port(2)   ->   0x00 'K' flow(4)
type Forwarder struct {
	lis    *udpbatch.Conn
	relays []*udpbatch.Conn
	poll   *udpbatch.Poller

	mu      sync.Mutex // guards clients and flows during set-up (the loop holds it per round)
	clients map[netip.AddrPort]int
	flows   []fwdFlow
}

type fwdFlow struct{ client, peer netip.AddrPort }

const fwdHeadroom = 4

// NewForwarder listens on listen and opens n relay sockets on its IP.
func NewForwarder(listen netip.AddrPort, n int) (*Forwarder, error) {
	lis, err := udpbatch.Listen(listen)
	if err != nil {
		return nil, err
	}
	lis.SetBuffers(8<<20, 8<<20)
	f := &Forwarder{lis: lis, clients: map[netip.AddrPort]int{}, flows: make([]fwdFlow, n)}
	// The same loop as the supernode's data plane: blocked in epoll_wait
	// on its own thread when GOMAXPROCS allows, else in Go's poller.
	newPoller := udpbatch.NewPoller
	if runtime.GOMAXPROCS(0) >= 2 {
		newPoller = udpbatch.NewBlockingPoller
	}
	if f.poll, err = newPoller(256); err != nil {
		lis.Close()
		return nil, err
	}
	f.poll.Add(lis, 0)
	for i := range n {
		c, err := udpbatch.Listen(netip.AddrPortFrom(listen.Addr(), 0))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("relaybench: forwarder relay socket %d: %w", i, err)
		}
		c.SetBuffers(2<<20, 1<<20)
		f.relays = append(f.relays, c)
		if err := f.poll.Add(c, uint32(i+1)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// Addr is the listener's address; RelayAddrs the flows' relay sockets.
func (f *Forwarder) Addr() netip.AddrPort { return f.lis.LocalAddr() }

func (f *Forwarder) RelayAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(f.relays))
	for i, c := range f.relays {
		out[i] = c.LocalAddr()
	}
	return out
}

// Close releases every socket.
func (f *Forwarder) Close() error {
	f.poll.Close()
	f.lis.Close()
	for _, c := range f.relays {
		c.Close()
	}
	return nil
}

// Run forwards until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	runtime.LockOSThread() // a blocking poller waits on this thread
	defer runtime.UnlockOSThread()
	stop := context.AfterFunc(ctx, func() { f.poll.Close() })
	defer stop()
	cin := udpbatch.NewBatch(64, 2048, 0, false)
	pin := udpbatch.NewBatch(8, 2048, fwdHeadroom, false)
	out := udpbatch.NewBatch(128, 0, 0, false)
	bufs := make([][]byte, 128)
	var free [][]byte
	for range 128 {
		free = append(free, make([]byte, fwdHeadroom+2048))
	}
	nout := 0
	flush := func() {
		f.lis.WriteBatch(out, nout)
		for i := range nout {
			free = append(free, bufs[i])
		}
		nout = 0
	}
	for {
		tags, err := f.poll.Wait()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		for _, tag := range tags {
			if tag == 0 {
				for range 4 {
					n, _ := f.lis.ReadBatch(cin)
					for i := range n {
						f.fromClient(&cin.Msgs[i])
					}
					if n < len(cin.Msgs) {
						break
					}
				}
				continue
			}
			flow := int(tag - 1)
			n, _ := f.relays[flow].ReadBatch(pin)
			fl := f.flows[flow]
			for i := range n {
				m := &pin.Msgs[i]
				if m.Addr != fl.peer || !fl.client.IsValid() {
					continue
				}
				if nout == len(out.Msgs) || len(free) == 0 {
					flush()
				}
				buf := m.Buf
				binary.BigEndian.PutUint16(buf[0:], 0x4000)
				binary.BigEndian.PutUint16(buf[2:], uint16(m.N))
				out.Msgs[nout] = udpbatch.Msg{Buf: buf[:fwdHeadroom+m.N], Addr: fl.client}
				bufs[nout] = buf
				nout++
				m.Buf = free[len(free)-1]
				free = free[:len(free)-1]
			}
		}
		f.mu.Unlock()
		flush()
	}
}

func (f *Forwarder) fromClient(m *udpbatch.Msg) {
	b := m.Payload(0)
	switch {
	case len(b) >= 4 && b[0] >= 0x40 && b[0] <= 0x7f:
		l := int(binary.BigEndian.Uint16(b[2:]))
		if flow, ok := f.clients[m.Addr]; ok && 4+l <= len(b) {
			f.relays[flow].WriteTo(b[4:4+l], f.flows[flow].peer)
		}
	case len(b) == 12 && b[0] == 0 && b[1] == 'B':
		flow := int(binary.BigEndian.Uint32(b[2:]))
		if flow >= len(f.flows) {
			return
		}
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[6:10])), binary.BigEndian.Uint16(b[10:]))
		f.clients[m.Addr] = flow
		f.flows[flow] = fwdFlow{client: m.Addr, peer: peer}
		var ack [6]byte
		ack[1] = 'K'
		binary.BigEndian.PutUint32(ack[2:], uint32(flow))
		f.lis.WriteTo(ack[:], m.Addr)
	}
}
