package supernode_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/quic-go/quic-go"
)

func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }

// tokenKey signs relay tokens in these tests, so they can forge and
// expire tokens on purpose.
var tokenKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// loopbackSignal starts a signaling server that accepts loopback
// candidates and probes quickly.
func loopbackSignal(t testing.TB, mod func(*signal.SupernodeConfig)) *signaltest.Server {
	t.Helper()
	cfg := signal.SupernodeConfig{
		TokenKey:     tokenKey,
		AllowAddrs:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeBytes:   256 << 10,
		MinMbps:      1,
		ProbeTimeout: time.Second,
		Heartbeat:    200 * time.Millisecond,
		RetryAfter:   time.Hour,
	}
	if mod != nil {
		mod(&cfg)
	}
	return signaltest.Start(t, signal.Config{Supernodes: cfg})
}

// user is a bare signaling client that collects supernode lists.
type user struct {
	t        testing.TB
	name     string
	ws       *websocket.Conn
	lists    chan *proto.SupernodeList
	statuses chan *proto.SupernodeStatus
	errs     chan *proto.Error
	ice      []proto.ICEServer
}

// signIn signs name in and reads frames in the background.
func signIn(t testing.TB, url, name string) *user {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	u := &user{t: t, name: name, ws: ws, lists: make(chan *proto.SupernodeList, 16),
		statuses: make(chan *proto.SupernodeStatus, 16), errs: make(chan *proto.Error, 16)}
	read := func() *proto.Envelope {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("%s: read: %v", name, err)
		}
		env, err := proto.Decode(data)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		return env
	}
	hello, err := proto.DecodeBody[*proto.Hello](read())
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	u.send(proto.TypeAuth, "auth", proto.SignAuth(key, hello.Challenge, name))
	w, err := proto.DecodeBody[*proto.Welcome](read())
	if err != nil {
		t.Fatalf("%s: welcome: %v", name, err)
	}
	u.ice = w.ICEServers
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ws.SetReadDeadline(time.Time{})
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			env, err := proto.Decode(data)
			if err != nil {
				continue
			}
			switch env.Type {
			case proto.TypeSupernodes:
				if l, err := proto.DecodeBody[*proto.SupernodeList](env); err == nil {
					select {
					case u.lists <- l:
					default:
					}
				}
			case proto.TypeSupernodeStatus:
				if s, err := proto.DecodeBody[*proto.SupernodeStatus](env); err == nil {
					select {
					case u.statuses <- s:
					default:
					}
				}
			case proto.TypeError:
				if e, err := proto.DecodeBody[*proto.Error](env); err == nil {
					select {
					case u.errs <- e:
					default:
					}
				}
			}
		}
	}()
	t.Cleanup(func() { ws.Close(); <-done })
	return u
}

func (u *user) send(typ proto.Type, id string, b proto.Body) {
	u.t.Helper()
	env, err := proto.New(typ, id, "", b)
	if err != nil {
		u.t.Fatal(err)
	}
	raw, _ := proto.Encode(env)
	if err := u.ws.WriteMessage(websocket.TextMessage, raw); err != nil {
		u.t.Fatalf("%s: write: %v", u.name, err)
	}
}

// list waits for a supernode list with at least min entries (asking for
// one first).
func (u *user) list(min int) *proto.SupernodeList {
	u.t.Helper()
	deadline := time.After(5 * time.Second)
	u.send(proto.TypeRelayRequest, "rr", &proto.RelayRequest{})
	for {
		select {
		case l := <-u.lists:
			if len(l.Supernodes) >= min {
				return l
			}
		case <-deadline:
			u.t.Fatalf("%s: no supernode list with %d entries", u.name, min)
			return nil
		}
	}
}

// quicDial connects to a supernode's QUIC listener, pinning fp.
func quicDial(t testing.TB, addr netip.AddrPort, fp string) *quic.Conn {
	t.Helper()
	return quicDialWith(t, addr, fp, &quic.Config{})
}

// quicDialWith is quicDial with a QUIC config (datagrams, say).
func quicDialWith(t testing.TB, addr netip.AddrPort, fp string, qc *quic.Config) *quic.Conn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), proto.PinnedTLSConfig(fp, proto.RelayALPN), qc)
	if err != nil {
		tr.Close()
		pc.Close()
		t.Fatalf("quic dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, ""); tr.Close(); pc.Close() })
	return conn
}

// hello opens a stream, sends h and returns the reply and the stream.
func hello(t testing.TB, conn *quic.Conn, h *proto.RelayHello) (*proto.RelayReply, *quic.Stream) {
	t.Helper()
	st, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	var err2 error
	if h != nil {
		err2 = proto.WriteRelayFrame(st, h)
	} else {
		_, err2 = st.Write([]byte{0}) // half a length prefix
	}
	if err2 != nil {
		t.Fatal(err2)
	}
	st.SetDeadline(time.Now().Add(10 * time.Second))
	var r proto.RelayReply
	if err := proto.ReadRelayFrame(st, &r); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	st.SetDeadline(time.Time{})
	return &r, st
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}
