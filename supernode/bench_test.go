package supernode_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/quic-go/quic-go"
)

// lossyConn is a UDP socket behind a bad link: each datagram, in either
// direction, is dropped with probability loss or delayed by delay.
type lossyConn struct {
	net.PacketConn
	loss  float64
	delay time.Duration
	mu    sync.Mutex // guards rng
	rng   *rand.Rand
	in    chan pkt
	done  chan struct{}
	once  sync.Once
}

type pkt struct {
	b    []byte
	from net.Addr
}

func newLossyConn(pc net.PacketConn, loss float64, delay time.Duration) *lossyConn {
	c := &lossyConn{PacketConn: pc, loss: loss, delay: delay, rng: rand.New(rand.NewPCG(1, 2)), in: make(chan pkt, 1024), done: make(chan struct{})}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				c.Close()
				return
			}
			if c.drop() {
				continue
			}
			p := pkt{append([]byte(nil), buf[:n]...), from}
			time.AfterFunc(c.delay, func() {
				select {
				case c.in <- p:
				default:
				}
			})
		}
	}()
	return c
}

func (c *lossyConn) drop() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.Float64() < c.loss
}

func (c *lossyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *lossyConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.drop() {
		return len(b), nil
	}
	p := append([]byte(nil), b...)
	time.AfterFunc(c.delay, func() { c.PacketConn.WriteTo(p, a) })
	return len(b), nil
}

func (c *lossyConn) Close() error {
	c.once.Do(func() { close(c.done); c.PacketConn.Close() })
	return nil
}

// voiceRun sends n voice frames (160 bytes every 20 ms, Opus at 64 kbit/s)
// from a client behind a lossy link to a QUIC server, as stream frames or
// as datagrams, and returns each frame's one-way delay (-1: never came).
func voiceRun(tb testing.TB, datagrams bool, loss float64, delay time.Duration, n int) []time.Duration {
	tb.Helper()
	sn, err := supernode.SelfSignedCert("bench")
	if err != nil {
		tb.Fatal(err)
	}
	spc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	str := &quic.Transport{Conn: spc}
	defer str.Close()
	qc := &quic.Config{EnableDatagrams: true, MaxIdleTimeout: 30 * time.Second}
	ln, err := str.Listen(&tls.Config{Certificates: []tls.Certificate{*sn}, NextProtos: []string{proto.RelayALPN}}, qc)
	if err != nil {
		tb.Fatal(err)
	}
	cpc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	lossy := newLossyConn(cpc, loss, delay)
	ctr := &quic.Transport{Conn: lossy}
	defer ctr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := ctr.Dial(ctx, spc.LocalAddr(), proto.PinnedTLSConfig(supernode.Fingerprint(sn), proto.RelayALPN), qc)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	sconn, err := ln.Accept(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer sconn.CloseWithError(0, "")

	got := make([]time.Duration, n)
	for i := range got {
		got[i] = -1
	}
	var mu sync.Mutex
	record := func(b []byte) {
		if len(b) < 12 {
			return
		}
		seq := int(binary.BigEndian.Uint32(b))
		sent := int64(binary.BigEndian.Uint64(b[4:]))
		if seq < n {
			mu.Lock()
			got[seq] = time.Duration(time.Now().UnixNano() - sent)
			mu.Unlock()
		}
	}
	recvDone := make(chan struct{})
	var st *quic.Stream
	if datagrams {
		go func() {
			defer close(recvDone)
			for {
				b, err := sconn.ReceiveDatagram(ctx)
				if err != nil {
					return
				}
				record(b)
			}
		}()
	} else {
		st, err = conn.OpenStreamSync(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		st.Write([]byte{0, 0}) // announce the stream
		go func() {
			defer close(recvDone)
			s, err := sconn.AcceptStream(ctx)
			if err != nil {
				return
			}
			io.ReadFull(s, make([]byte, 2))
			hdr := make([]byte, 2)
			for {
				if _, err := io.ReadFull(s, hdr); err != nil {
					return
				}
				b := make([]byte, binary.BigEndian.Uint16(hdr))
				if _, err := io.ReadFull(s, b); err != nil {
					return
				}
				record(b)
			}
		}()
	}
	frame := make([]byte, 160)
	next := time.Now()
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint32(frame, uint32(i))
		binary.BigEndian.PutUint64(frame[4:], uint64(time.Now().UnixNano()))
		if datagrams {
			conn.SendDatagram(frame)
		} else {
			var hdr [2]byte
			binary.BigEndian.PutUint16(hdr[:], uint16(len(frame)))
			st.Write(append(hdr[:], frame...))
		}
		next = next.Add(20 * time.Millisecond)
		time.Sleep(time.Until(next))
	}
	time.Sleep(4*delay + 300*time.Millisecond) // stragglers and retransmissions
	cancel()
	conn.CloseWithError(0, "")
	sconn.CloseWithError(0, "")
	<-recvDone
	mu.Lock()
	defer mu.Unlock()
	return append([]time.Duration(nil), got...)
}

// voiceFigures: delivered share, p50 and p99 of delivered frames' delay,
// and the share that arrived too late for a 60 ms jitter buffer on top of
// the path delay (or never): what a listener loses.
func voiceFigures(d []time.Duration, pathDelay time.Duration) (delivered, p50, p99, unusable float64) {
	var ok []time.Duration
	bad := 0
	for _, x := range d {
		if x < 0 {
			bad++
			continue
		}
		ok = append(ok, x)
		if x > pathDelay+60*time.Millisecond {
			bad++
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i] < ok[j] })
	ms := func(q float64) float64 {
		if len(ok) == 0 {
			return -1
		}
		return float64(ok[int(q*float64(len(ok)-1))]) / 1e6
	}
	return float64(len(ok)) / float64(len(d)) * 100, ms(0.5), ms(0.99), float64(bad) / float64(len(d)) * 100
}

// BenchmarkRelayVoice measures relayed voice over one QUIC connection as a
// stream (what pion's TURN-over-TCP proxy dialer needs) and as datagrams,
// with loss both ways and 20 ms one-way delay. b.N is the number of 20 ms
// voice frames: run with -benchtime 500x.
func BenchmarkRelayVoice(b *testing.B) {
	const delay = 20 * time.Millisecond
	for _, loss := range []float64{0, 0.02, 0.05} {
		for _, mode := range []string{"stream", "datagram"} {
			b.Run(fmt.Sprintf("%s/loss=%.0f%%", mode, loss*100), func(b *testing.B) {
				d := voiceRun(b, mode == "datagram", loss, delay, b.N)
				delivered, p50, p99, unusable := voiceFigures(d, delay)
				b.ReportMetric(delivered, "delivered-%")
				b.ReportMetric(p50, "p50-ms")
				b.ReportMetric(p99, "p99-ms")
				b.ReportMetric(unusable, "late-or-lost-%")
			})
		}
	}
}

// BenchmarkRelayThroughput pushes TURN ChannelData-sized packets between
// two allocations on one supernode over QUIC relay streams (client A's
// relay -> client B's relay -> B): the supernode's per-packet cost.
func BenchmarkRelayThroughput(b *testing.B) {
	sig := loopbackSignal(b, nil)
	sn := supernodetest.Start(b, sig.URL, supernode.Config{AllowPeers: supernodetest.Loopback, MaxSessionKbps: 1e6, MaxRelayMbps: 1e4})
	sn.WaitState(b, proto.SupernodePromoted, 10*time.Second)
	a := signIn(b, sig.URL, "bencha").list(1).Supernodes[0]
	bb := signIn(b, sig.URL, "benchb").list(1).Supernodes[0]
	_, ra := allocate(b, sn, a)
	_, rb := allocate(b, sn, bb)
	payload := make([]byte, 200)
	// Permissions both ways, then measure.
	ra.WriteTo(payload, rb.LocalAddr())
	rb.WriteTo(payload, ra.LocalAddr())
	var wg sync.WaitGroup
	wg.Add(1)
	recv := 0
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for recv < b.N {
			rb.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := rb.ReadFrom(buf); err != nil {
				return
			}
			recv++
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		ra.WriteTo(payload, rb.LocalAddr())
		if i%64 == 63 {
			time.Sleep(50 * time.Microsecond) // stay under the socket buffers
		}
	}
	wg.Wait()
	el := time.Since(start)
	b.ReportMetric(float64(recv)/el.Seconds(), "pkts/s")
	b.ReportMetric(float64(recv)/float64(b.N)*100, "delivered-%")
	if st := sn.Stats(); st.SessionDrops+st.Shed+st.DeniedPackets > 0 {
		b.Logf("the supernode dropped packets by policy: %+v", st)
	}
}
