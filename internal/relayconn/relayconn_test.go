package relayconn

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"github.com/quic-go/quic-go"
)

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// pair returns both ends of one relay stream, with or without datagrams.
func pair(t *testing.T, datagrams bool) (client, server *Conn, cctr, sctr *Counters) {
	return pairWith(t, datagrams, Options{})
}

type muxMode int

const (
	streamOnly  muxMode = iota
	datagramMux         // NewMux on both ends
	lossyMux            // NewLossyMux on the client's end
)

// pairWith is pair with the server end's options.
func pairWith(t *testing.T, datagrams bool, opts Options) (client, server *Conn, cctr, sctr *Counters) {
	return pairModeWith(t, map[bool]muxMode{false: streamOnly, true: datagramMux}[datagrams], opts)
}

func pairMode(t *testing.T, mode muxMode) (client, server *Conn, cctr, sctr *Counters) {
	return pairModeWith(t, mode, Options{})
}

func pairModeWith(t *testing.T, mode muxMode, opts Options) (client, server *Conn, cctr, sctr *Counters) {
	t.Helper()
	qc := &quic.Config{EnableDatagrams: true}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"t"}}, qc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, qc)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.CloseWithError(0, ""); sc.CloseWithError(0, "") })
	cctr, sctr = new(Counters), new(Counters)
	var cm, sm *Mux
	switch mode {
	case datagramMux:
		cm, sm = NewMux(cc, cctr), NewMux(sc, sctr)
	case lossyMux:
		cm, sm = NewLossyMux(cc, cctr, 64), NewMux(sc, sctr)
	}
	cst, err := cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client = New(cst, cm, cctr, nil, nil)
	// The stream reaches the server with its first bytes: a STUN message.
	if _, err := client.Write(stunMsg(8)); err != nil {
		t.Fatal(err)
	}
	sst, err := sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	server = NewWith(sst, sm, sctr, nil, nil, opts)
	t.Cleanup(func() { client.Close(); server.Close() })
	buf := make([]byte, 1600)
	if n, err := server.Read(buf); err != nil || !bytes.Equal(buf[:n], stunMsg(8)) {
		t.Fatalf("first message: %x %v", buf[:n], err)
	}
	return client, server, cctr, sctr
}

// stunMsg is a STUN-shaped message with an n-byte body (n % 4 == 0).
func stunMsg(n int) []byte {
	b := make([]byte, 20+n)
	binary.BigEndian.PutUint16(b[0:2], 0x0001) // Binding request
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	binary.BigEndian.PutUint32(b[4:8], 0x2112A442)
	for i := 20; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

// chanData is padded ChannelData on channel 0x4001 with an n-byte payload.
func chanData(n int, fill byte) []byte {
	b := make([]byte, 4+(n+3)&^3)
	binary.BigEndian.PutUint16(b[0:2], 0x4001)
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	for i := 4; i < 4+n; i++ {
		b[i] = fill
	}
	return b
}

func TestMessagesBothWays(t *testing.T) {
	for _, mode := range []muxMode{streamOnly, datagramMux, lossyMux} {
		dg := mode != streamOnly
		name := map[muxMode]string{streamOnly: "stream", datagramMux: "datagram", lossyMux: "lossy datagram"}[mode]
		t.Run(name, func(t *testing.T) {
			client, server, cctr, sctr := pairMode(t, mode)
			msgs := [][]byte{chanData(160, 1), stunMsg(40), chanData(3, 2), chanData(1000, 3), stunMsg(0)}
			for _, m := range msgs {
				if _, err := client.Write(m); err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]bool{}
			buf := make([]byte, 2000)
			for range msgs {
				server.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := server.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got[string(buf[:n])] = true
			}
			for _, m := range msgs {
				if !got[string(m)] {
					t.Fatalf("message %x… not received whole", m[:8])
				}
			}
			// And back.
			if _, err := server.Write(chanData(50, 9)); err != nil {
				t.Fatal(err)
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := client.Read(buf); err != nil || !bytes.Equal(buf[:n], chanData(50, 9)) {
				t.Fatalf("reply %x %v", buf[:n], err)
			}
			if dg {
				testutil.Eventually(t, 5*time.Second, "datagrams counted", func() bool { return cctr.DatagramsOut.Load() == 3 })
				if cctr.DatagramsOut.Load() != 3 || sctr.DatagramsIn.Load() != 3 || sctr.DatagramsOut.Load() != 1 {
					t.Fatalf("datagrams out %d in %d back %d", cctr.DatagramsOut.Load(), sctr.DatagramsIn.Load(), sctr.DatagramsOut.Load())
				}
			} else if cctr.DatagramsOut.Load() != 0 || cctr.StreamFramesOut.Load() != 6 {
				t.Fatalf("stream-only sent %d datagrams, %d frames", cctr.DatagramsOut.Load(), cctr.StreamFramesOut.Load())
			}
		})
	}
}

func TestTooLargeGoesOnStream(t *testing.T) {
	for _, mode := range []muxMode{datagramMux, lossyMux} {
		t.Run(map[muxMode]string{datagramMux: "datagram", lossyMux: "lossy datagram"}[mode], func(t *testing.T) {
			client, server, cctr, _ := pairMode(t, mode)
			big := chanData(1400, 7) // over a datagram's room on a 1280-byte path
			if _, err := client.Write(big); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2000)
			server.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := server.Read(buf); err != nil || !bytes.Equal(buf[:n], big) {
				t.Fatalf("big message: %d bytes, %v", n, err)
			}
			if cctr.TooLarge.Load() != 1 {
				t.Fatalf("TooLarge %d", cctr.TooLarge.Load())
			}
		})
	}
}

// TestLossyMuxNeverBlocks: the supernode vanishes without a word (its
// socket closed: no CONNECTION_CLOSE, no more acknowledgements). quic-go's
// own SendDatagram then blocks once 32 datagrams wait, and a stream Write
// once its data cannot be sent, until the idle timeout; a lossy mux's
// writes of both kinds return at once and the excess is counted as
// dropped, and Close does not hang on the stuck stream.
func TestLossyMuxNeverBlocks(t *testing.T) {
	qc := &quic.Config{EnableDatagrams: true, MaxIdleTimeout: time.Minute}
	spc, err := net.ListenPacket("udp", "127.0.0.1:0") //nolint:noctx // bind only
	if err != nil {
		t.Fatal(err)
	}
	str := &quic.Transport{Conn: spc}
	ln, err := str.Listen(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"t"}}, qc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, err := quic.DialAddr(ctx, spc.LocalAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, qc)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(0, "")
	if _, err := ln.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	ctr := new(Counters)
	m := NewLossyMux(cc, ctr, 64)
	st, err := cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := New(st, m, ctr, nil, nil)
	spc.Close() // the supernode is gone: nothing is acknowledged any more
	defer str.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			c.Write(chanData(160, 1))
			c.Write(stunMsg(1000)) // a Send indication, on the stream
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writes to a vanished peer blocked")
	}
	if ctr.DatagramsDropped.Load() == 0 || ctr.StreamFramesDropped.Load() == 0 {
		t.Fatalf("of 2000 datagrams and 2000 stream messages to a vanished peer, %d and %d dropped (%d and %d sent)",
			ctr.DatagramsDropped.Load(), ctr.StreamFramesDropped.Load(), ctr.DatagramsOut.Load(), ctr.StreamFramesOut.Load())
	}
	if m.LastSend().IsZero() {
		t.Fatal("LastSend is zero after datagrams went out")
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a stream its peer stopped acknowledging")
	}
}

func TestShortReadsAndDeadline(t *testing.T) {
	client, server, _, _ := pair(t, false)
	m := chanData(100, 5)
	client.Write(m)
	var got []byte
	small := make([]byte, 7)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(m) {
		n, err := server.Read(small)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, small[:n]...)
	}
	if !bytes.Equal(got, m) {
		t.Fatal("short reads reassembled wrongly")
	}
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	if _, err := server.Read(small); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("deadline took %s", d)
	}
	// Closing the peer ends reads.
	client.Close()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(small); err == nil {
		t.Fatal("read after the peer closed succeeded")
	}
}

func TestMalformedStreamEnds(t *testing.T) {
	client, server, _, _ := pair(t, false)
	client.wmu.Lock()
	client.st.Write([]byte{0xff, 0xff, 0, 0}) // neither STUN nor ChannelData
	client.wmu.Unlock()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 100)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("malformed stream: %v", err)
	}
	var _ net.Conn = server
}

// TestDirectMode: a relay that takes the datagrams itself reads control
// messages straight off the stream (short reads and deadlines included)
// and gets every ChannelData datagram in its handler, never in Read.
func TestDirectMode(t *testing.T) {
	got := make(chan []byte, 16)
	client, server, _, sctr := pairWith(t, true, Options{OnDatagram: func(m []byte) { got <- m }})
	for _, m := range [][]byte{chanData(160, 1), stunMsg(40), chanData(3, 2)} {
		if _, err := client.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2000)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := server.Read(buf); err != nil || !bytes.Equal(buf[:n], stunMsg(40)) {
		t.Fatalf("stream message: %x %v", buf[:n], err)
	}
	for _, want := range [][]byte{chanData(160, 1), chanData(3, 2)} {
		select {
		case m := <-got:
			if !bytes.Equal(m, want) {
				t.Fatalf("datagram %x, want %x", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("datagram never reached the handler")
		}
	}
	if sctr.DatagramsIn.Load() != 2 {
		t.Fatalf("DatagramsIn %d", sctr.DatagramsIn.Load())
	}
	// A short read keeps the rest of the message for the next Read.
	client.Write(stunMsg(100))
	small := make([]byte, 50)
	var whole []byte
	for len(whole) < 120 {
		n, err := server.Read(small)
		if err != nil {
			t.Fatal(err)
		}
		whole = append(whole, small[:n]...)
	}
	if !bytes.Equal(whole, stunMsg(100)) {
		t.Fatal("short reads reassembled wrongly")
	}
	server.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := server.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle read: %v", err)
	}
	// The framing survived the deadline.
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	client.Write(stunMsg(4))
	if n, err := server.Read(buf); err != nil || !bytes.Equal(buf[:n], stunMsg(4)) {
		t.Fatalf("after a deadline: %x %v", buf[:n], err)
	}
	// WriteChannelData: a datagram to the client, or the stream (padded)
	// when too large.
	for _, n := range []int{50, 1400} {
		buf := make([]byte, Headroom+4+n)
		copy(buf[Headroom:], chanData(n, 6)[:4+n])
		if err := server.WriteChannelData(buf); err != nil {
			t.Fatal(err)
		}
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := client.Read(buf[:cap(buf)])
		rb := make([]byte, 2000)
		copy(rb, buf[:k])
		if err != nil || !bytes.Equal(rb[:4+n], chanData(n, 6)[:4+n]) {
			t.Fatalf("WriteChannelData %d bytes: got %d, %v", n, k, err)
		}
	}
	server.Close()
	if _, err := server.Read(buf); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

// TestWritesAddNoAllocations: building a datagram costs nothing beyond
// quic-go's own frame and copy. (Runs stay under quic-go's 32-datagram
// queue, so SendDatagram never waits.)
func TestWritesAddNoAllocations(t *testing.T) {
	if raceEnabled {
		// The race detector makes sync.Pool drop a share of what is put
		// back, so pooled buffers allocate: `make test` runs this test
		// again without -race (the Makefile's allocation pass).
		t.Skip("allocation counts need a build without -race")
	}
	var got atomic.Int64
	client, _, _, _ := pairWith(t, true, Options{OnDatagram: func([]byte) { got.Add(1) }})
	msg := chanData(160, 1)
	raw := append([]byte{byte(client.qid)}, msg...)
	drain := func(want int64) {
		testutil.Eventually(t, 5*time.Second, "datagrams delivered", func() bool { return got.Load() >= want })
	}
	// quic-go's own count wobbles now and then (a queue growing, a timer):
	// averaged over 100 sends, ours may not add a tenth of one.
	base := testing.AllocsPerRun(100, func() { client.mux.conn.SendDatagram(raw) })
	drain(101)
	if n := testing.AllocsPerRun(100, func() { client.Write(msg) }); n > base+0.1 {
		t.Fatalf("Write: %.1f allocations, SendDatagram alone %.1f", n, base)
	}
	drain(202)
	buf := make([]byte, Headroom+len(msg))
	if n := testing.AllocsPerRun(100, func() {
		copy(buf[Headroom:], msg)
		client.WriteChannelData(buf)
	}); n > base+0.1 {
		t.Fatalf("WriteChannelData: %.1f allocations, SendDatagram alone %.1f", n, base)
	}
}

// FuzzSplit: whatever Split returns re-joins to the input's prefix, every
// message has the length its header states, and it never panics.
func FuzzSplit(f *testing.F) {
	f.Add(append(append(stunMsg(8), chanData(5, 1)...), 0x40, 0x01))
	f.Add(chanData(160, 0xaa))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(stunMsg(0)[:10])
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, rest, err := Split(data)
		var joined []byte
		for _, m := range msgs {
			n, ferr := frameLen(m)
			if ferr != nil || n != len(m) {
				t.Fatalf("message of %d bytes with header length %d (%v)", len(m), n, ferr)
			}
			joined = append(joined, m...)
		}
		if !bytes.Equal(append(joined, rest...), data) {
			t.Fatal("messages and rest do not re-join to the input")
		}
		if err == nil && len(rest) >= 4 {
			if n, _ := frameLen(rest); n <= len(rest) {
				t.Fatal("a whole message left in rest")
			}
		}
	})
}
