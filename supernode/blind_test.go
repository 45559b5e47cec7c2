package supernode_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/webrtc/v4"
)

// tap is a PacketListener that keeps a copy of every datagram the
// supernode's sockets send or receive: exactly what it forwards.
type tap struct {
	mu   sync.Mutex // guards pkts
	pkts [][]byte
}

func (t *tap) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := net.ListenPacket(network, address) //nolint:noctx // bind only
	if err != nil {
		return nil, err
	}
	return &tapConn{PacketConn: pc, t: t}, nil
}

func (t *tap) add(p []byte) {
	t.mu.Lock()
	t.pkts = append(t.pkts, append([]byte(nil), p...))
	t.mu.Unlock()
}

func (t *tap) all() [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([][]byte(nil), t.pkts...)
}

type tapConn struct {
	net.PacketConn
	t *tap
}

func (c *tapConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(p)
	if n > 0 {
		c.t.add(p[:n])
	}
	return n, a, err
}

func (c *tapConn) WriteTo(p []byte, a net.Addr) (int, error) {
	c.t.add(p)
	return c.PacketConn.WriteTo(p, a)
}

type peer struct {
	*client.Client
	ev *testutil.Recorder[client.Event]
}

// startPeer runs a real client on loopback that may only use relayed
// paths (ICE transport policy "relay"), so everything between the two
// peers crosses the supernode.
func startPeer(t *testing.T, url, name string, mod func(*client.Config)) *peer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly,
		ICETransportPolicy: webrtc.ICETransportPolicyRelay, ReconnectMin: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{Client: c, ev: testutil.Record(c.Events())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func isRelayEvent(e client.Event) bool {
	r, ok := e.(client.RelayEvent)
	return ok && r.Supernode != ""
}

// TestRelayedChatIsBlind: two clients that can only meet through the
// supernode chat and call through it; the supernode's sockets carry
// DTLS records, never the text.
func TestRelayedChatIsBlind(t *testing.T) {
	sig := loopbackSignal(t, nil)
	var tp tap
	sn := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snblind", AllowPeers: supernodetest.Loopback, PacketListener: &tp})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)

	alice := startPeer(t, sig.URL, "alice", func(c *client.Config) { c.Relay.AlwaysWarm = true })
	bob := startPeer(t, sig.URL, "bob", nil)
	for _, p := range []*peer{alice, bob} {
		p.ev.Wait(t, 10*time.Second, "a supernode list", isRelayEvent)
	}
	warm := alice.ev.Wait(t, 10*time.Second, "a warm QUIC connection", func(e client.Event) bool {
		r, ok := e.(client.RelayEvent)
		return ok && r.Warm
	}).(client.RelayEvent)
	if warm.Supernode != "snblind" || warm.Transport != "quic" {
		t.Fatalf("warm-up %+v", warm)
	}
	alice.ev.Wait(t, 10*time.Second, "bob online", func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == "bob" && p.Online()
	})

	secret := "the eagle lands at midnight, code 7f3a9c"
	ctx := context.Background()
	// First a message to open the link, then the secret over the
	// data channel through the relay.
	if _, err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, 20*time.Second, "first message", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.Text == "hello bob"
	})
	// Wait for the data channel (relayed) before sending the secret, so
	// it cannot go through the server.
	waitFor(t, 20*time.Second, "a relayed link", func() bool { return sn.Stats().BytesRelayed > 0 })
	conn := placeCall(t, alice, bob, "bob", "alice")
	if conn.Path != "relay" || conn.Via != "snblind" {
		t.Fatalf("call path %q via %q, want relay via snblind", conn.Path, conn.Via)
	}
	// The data channel opens around the same time: wait until a message
	// is delivered over it before sending the secret.
	for i := 0; ; i++ {
		pid, err := alice.Send(ctx, "bob", "ping")
		if err != nil {
			t.Fatal(err)
		}
		d := alice.ev.Wait(t, 10*time.Second, "ping delivered", func(e client.Event) bool {
			d, ok := e.(client.DeliveredEvent)
			return ok && d.ID == pid
		}).(client.DeliveredEvent)
		if d.Path == "direct" {
			break
		}
		if i == 50 {
			t.Fatal("the data channel never carried a message")
		}
	}
	id, err := alice.Send(ctx, "bob", secret)
	if err != nil {
		t.Fatal(err)
	}
	got := bob.ev.Wait(t, 10*time.Second, "the secret", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.Text == secret
	}).(client.MessageEvent)
	if got.Path != "direct" {
		t.Fatalf("secret went %s, want over the (relayed) data channel", got.Path)
	}
	alice.ev.Wait(t, 10*time.Second, "delivery", func(e client.Event) bool {
		d, ok := e.(client.DeliveredEvent)
		return ok && d.ID == id
	})
	st := bob.ev.Wait(t, 10*time.Second, "stats", func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.RTPPacketsReceived > 10
	}).(client.StatsEvent)
	if st.Path != "relay" || st.Via != "snblind" {
		t.Fatalf("stats path %q via %q", st.Path, st.Via)
	}

	pkts := tp.all()
	var total, dtlsApp int
	for _, p := range pkts {
		total += len(p)
		// DTLS record content type 23 = application_data (RFC 6347
		// section 4.1); SRTP packets start with version 2 (0x80..0xbf).
		if len(p) > 13 && p[0] == 23 && p[1] == 0xfe {
			dtlsApp++
		}
		for _, needle := range []string{secret, "eagle lands", "7f3a9c", "hello bob"} {
			if bytes.Contains(p, []byte(needle)) {
				t.Fatalf("the supernode forwarded plaintext %q in a %d-byte packet", needle, len(p))
			}
		}
	}
	if dtlsApp == 0 {
		t.Fatalf("no DTLS application records among %d packets (%d bytes): the tap saw nothing relayed", len(pkts), total)
	}
	ss := sn.Stats()
	t.Logf("supernode forwarded %d packets (%d bytes, %d DTLS application records, %d bytes relayed; %d datagrams in, %d out, %d stream frames): no plaintext",
		len(pkts), total, dtlsApp, ss.BytesRelayed, ss.DatagramsIn, ss.DatagramsOut, ss.StreamFrames)
	// Media and chat rode QUIC datagrams; TURN control rode the streams.
	if ss.DatagramsIn == 0 || ss.DatagramsOut == 0 || ss.StreamFrames == 0 {
		t.Fatalf("relay transport: %d datagrams in, %d out, %d stream frames", ss.DatagramsIn, ss.DatagramsOut, ss.StreamFrames)
	}
}

// placeCall has caller call callee, callee answer, and returns the
// caller's connected event.
func placeCall(t *testing.T, caller, callee *peer, calleeName, callerName string) client.CallEvent {
	t.Helper()
	ctx := context.Background()
	if err := caller.Call(ctx, calleeName); err != nil {
		t.Fatal(err)
	}
	callee.ev.Wait(t, 10*time.Second, "ring", func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.State == client.CallRinging
	})
	if err := callee.Answer(ctx, callerName); err != nil {
		t.Fatal(err)
	}
	return caller.ev.Wait(t, 20*time.Second, "call connected", func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.State == client.CallConnected
	}).(client.CallEvent)
}
