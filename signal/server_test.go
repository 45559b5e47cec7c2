package signal_test

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// wsClient is a bare protocol client that lets tests send anything.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
	name string
	key  ed25519.PrivateKey
}

func dial(t testing.TB, url string) (*wsClient, string) {
	t.Helper()
	return dialWith(t, websocket.DefaultDialer, url)
}

// dialWith is dial through d (an in-memory network, say).
func dialWith(t testing.TB, d *websocket.Dialer, url string) (*wsClient, string) {
	t.Helper()
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &wsClient{t: t, conn: conn}
	env := c.read()
	if env.Type != proto.TypeHello {
		t.Fatalf("first frame %s, want hello", env.Type)
	}
	h, err := proto.DecodeBody[*proto.Hello](env)
	if err != nil {
		t.Fatal(err)
	}
	return c, h.Challenge
}

// login connects and authenticates name with key (a fresh key when nil).
func login(t testing.TB, url, name string, key ed25519.PrivateKey) *wsClient {
	t.Helper()
	c, _ := loginWith(t, websocket.DefaultDialer, url, name, key)
	return c
}

// loginWith is login through d; it returns the welcome frame too.
func loginWith(t testing.TB, d *websocket.Dialer, url, name string, key ed25519.PrivateKey) (*wsClient, *proto.Envelope) {
	t.Helper()
	c, challenge := dialWith(t, d, url)
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	c.name, c.key = name, key
	c.send(proto.TypeAuth, "auth-1", "", proto.SignAuth(key, challenge, name))
	env := c.read()
	if env.Type != proto.TypeWelcome {
		t.Fatalf("%s: got %s %s, want welcome", name, env.Type, env.Body)
	}
	return c, env
}

func (c *wsClient) send(typ proto.Type, id, to string, b proto.Body) {
	c.t.Helper()
	env, err := proto.New(typ, id, to, b)
	if err != nil {
		c.t.Fatal(err)
	}
	raw, _ := proto.Encode(env)
	c.sendRaw(raw)
}

func (c *wsClient) sendRaw(raw []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) read() *proto.Envelope {
	c.t.Helper()
	env, err := c.tryRead(5 * time.Second)
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.name, err)
	}
	return env
}

func (c *wsClient) tryRead(d time.Duration) (*proto.Envelope, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	return proto.Decode(data)
}

// readUntil reads frames until one of type typ arrives.
func (c *wsClient) readUntil(typ proto.Type) *proto.Envelope {
	c.t.Helper()
	for i := 0; i < 100; i++ {
		env := c.read()
		if env.Type == typ {
			return env
		}
	}
	c.t.Fatalf("%s: no %s frame", c.name, typ)
	return nil
}

// expectError reads until an error frame and checks its code.
func (c *wsClient) expectError(code proto.Code) *proto.Error {
	c.t.Helper()
	env := c.readUntil(proto.TypeError)
	e, err := proto.DecodeBody[*proto.Error](env)
	if err != nil {
		c.t.Fatal(err)
	}
	if e.Code != code {
		c.t.Fatalf("%s: error %s (%s), want %s", c.name, e.Code, e.Message, code)
	}
	return e
}

// expectClosed reads until the server closes the connection.
func (c *wsClient) expectClosed() {
	c.t.Helper()
	for i := 0; i < 100; i++ {
		if _, err := c.tryRead(5 * time.Second); err != nil {
			if strings.Contains(err.Error(), "timeout") {
				c.t.Fatalf("%s: connection not closed", c.name)
			}
			return
		}
	}
	c.t.Fatalf("%s: connection not closed", c.name)
}

// chatRoundTrip proves from and to can still talk through the server.
func chatRoundTrip(t *testing.T, from, to *wsClient, id string) {
	t.Helper()
	// A read receipt: a routed type the server forwards as it is (chat
	// itself goes sealed, through the mailbox: offline_test.go).
	from.send(proto.TypeRead, id, to.name, &proto.Receipt{ID: id})
	env := to.readUntil(proto.TypeRead)
	r, err := proto.DecodeBody[*proto.Receipt](env)
	if err != nil || r.ID != id || env.From != from.name {
		t.Fatalf("routed %s: got %+v from %q (%v)", id, r, env.From, err)
	}
	ack := from.readUntil(proto.TypeAck)
	if a, _ := proto.DecodeBody[*proto.Ack](ack); a == nil || a.Ref != id {
		t.Fatalf("ack %s: got %s", id, ack.Body)
	}
}

// watch adds names to c's contacts and returns the presence the server
// answered with (registered names only).
func watch(t testing.TB, c *wsClient, names ...string) map[string]proto.Presence {
	t.Helper()
	id := newRef()
	c.send(proto.TypeContacts, id, "", &proto.Contacts{Add: names})
	out := map[string]proto.Presence{}
	for i := 0; i < 1000; i++ {
		env := c.read()
		switch env.Type {
		case proto.TypePresenceList:
			l, err := proto.DecodeBody[*proto.PresenceList](env)
			if err != nil {
				t.Fatal(err)
			}
			if l.Ref != id {
				continue
			}
			for _, p := range l.Entries {
				out[p.Name] = p
			}
		case proto.TypeAck:
			if a, _ := proto.DecodeBody[*proto.Ack](env); a.Ref == id {
				return out
			}
		case proto.TypeError:
			t.Fatalf("%s: contacts: %s", c.name, env.Body)
		}
	}
	t.Fatalf("%s: no answer to contacts", c.name)
	return nil
}

var refs atomic.Int64

func newRef() string { return fmt.Sprint("r", refs.Add(1)) }

func TestPresenceAndRouting(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := login(t, srv.URL, "alice", nil)
	if got := watch(t, alice, "bob"); len(got) != 0 {
		t.Fatalf("presence of a name nobody registered: %+v", got)
	}
	bob := login(t, srv.URL, "bob", nil)

	p := alice.readUntil(proto.TypePresence)
	pr, _ := proto.DecodeBody[*proto.Presence](p)
	if pr.Name != "bob" || pr.Status != proto.StatusOnline {
		t.Fatalf("alice saw presence %+v, want bob online", pr)
	}
	chatRoundTrip(t, alice, bob, "m1")
	chatRoundTrip(t, bob, alice, "m2")

	// Bob's NAT report: alice learns his NAT type from presence (callers
	// plan links with it), and so does a newcomer's welcome below.
	bob.send(proto.TypeNATReport, "nr1", "", &proto.NATReport{Type: proto.NATSymmetric,
		Mapping: proto.BehaviorAddressAndPortDependent, Filtering: proto.BehaviorAddressAndPortDependent})
	pr, _ = proto.DecodeBody[*proto.Presence](alice.readUntil(proto.TypePresence))
	if pr.Name != "bob" || pr.Status != proto.StatusOnline || pr.NAT != proto.NATSymmetric {
		t.Fatalf("alice saw %+v after bob's NAT report, want bob online behind a symmetric NAT", pr)
	}

	// Away status reaches the other user.
	bob.send(proto.TypePresence, "st1", "", &proto.Presence{Status: proto.StatusAway})
	pr, _ = proto.DecodeBody[*proto.Presence](alice.readUntil(proto.TypePresence))
	if pr.Name != "bob" || pr.Status != proto.StatusAway {
		t.Fatalf("alice saw %+v, want bob away", pr)
	}

	// Bob leaves: alice sees him offline with a last-seen time, and
	// messages to him are refused as offline.
	bob.conn.Close()
	pr, _ = proto.DecodeBody[*proto.Presence](alice.readUntil(proto.TypePresence))
	if pr.Name != "bob" || pr.Status != proto.StatusOffline || pr.LastSeen == 0 {
		t.Fatalf("alice saw %+v, want bob offline with last_seen", pr)
	}
	alice.send(proto.TypeRead, "m3", "bob", &proto.Receipt{ID: "m3"})
	if e := alice.expectError(proto.CodeOffline); e.Ref != "m3" {
		t.Fatalf("offline error ref %q, want m3", e.Ref)
	}
	// A newcomer asking for both sees alice online and bob offline with
	// last seen.
	carol := login(t, srv.URL, "carol", nil)
	got := watch(t, carol, "alice", "bob")
	if got["alice"].Status != proto.StatusOnline || got["bob"].Status != proto.StatusOffline || got["bob"].LastSeen == 0 {
		t.Fatalf("carol sees %+v", got)
	}
	for _, p := range got {
		if p.NAT != "" {
			t.Errorf("%s listed with NAT %q; only online users who reported one have a NAT type", p.Name, p.NAT)
		}
	}
}

func TestNameBoundToFirstKey(t *testing.T) {
	dir := t.TempDir()
	srv := signaltest.Start(t, signal.Config{DataDir: dir})
	_, key, _ := ed25519.GenerateKey(nil)
	login(t, srv.URL, "alice", key).conn.Close()

	// Another key cannot take the name.
	c, challenge := dial(t, srv.URL)
	_, other, _ := ed25519.GenerateKey(nil)
	c.name = "mallory"
	c.send(proto.TypeAuth, "a", "", proto.SignAuth(other, challenge, "alice"))
	c.expectError(proto.CodeNameTaken)
	c.expectClosed()

	// The original key still can, also after a server restart (bbolt).
	login(t, srv.URL, "alice", key)
	srv.Close()
	srv2 := signaltest.Start(t, signal.Config{DataDir: dir})
	c, challenge = dial(t, srv2.URL)
	c.send(proto.TypeAuth, "a", "", proto.SignAuth(other, challenge, "alice"))
	c.expectError(proto.CodeNameTaken)
	login(t, srv2.URL, "alice", key)
}

func TestReconnectReplacesStaleSession(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	_, key, _ := ed25519.GenerateKey(nil)
	old := login(t, srv.URL, "alice", key)
	bob := login(t, srv.URL, "bob", nil)
	alice := login(t, srv.URL, "alice", key)
	old.expectError(proto.CodeReplaced)
	old.expectClosed()
	if got := srv.Online(); fmt.Sprint(got) != "[alice bob]" {
		t.Fatalf("online %v", got)
	}
	chatRoundTrip(t, bob, alice, "r1")
	chatRoundTrip(t, alice, bob, "r2")
}

func TestBadInput(t *testing.T) {
	big := `{"v":1,"type":"chat","to":"bob","body":{"id":"x","text":"` + strings.Repeat("a", proto.MaxFrameSize) + `"}}`
	cases := []struct {
		name   string
		raw    string // sent after login (or instead of auth when preAuth)
		code   proto.Code
		closes bool
	}{
		{"malformed json", `{"v":1,"type":`, proto.CodeBadFrame, false},
		{"not json", `hello`, proto.CodeBadFrame, false},
		{"unknown type", `{"v":1,"type":"teleport","id":"u1"}`, proto.CodeUnknownType, false},
		{"bad version", `{"v":9,"type":"chat","to":"bob","body":{"id":"x","text":"hi"}}`, proto.CodeBadVersion, false},
		{"missing recipient", `{"v":1,"type":"chat","body":{"id":"x","text":"hi"}}`, proto.CodeBadRequest, false},
		{"bad body", `{"v":1,"type":"offer","to":"bob","body":{"session":"s","sdp":"nonsense"}}`, proto.CodeBadRequest, false},
		{"bad recipient name", `{"v":1,"type":"chat","to":"Bob!","body":{"id":"x","text":"hi"}}`, proto.CodeBadName, false},
		{"spoofed sender", `{"v":1,"type":"chat","from":"bob","to":"carol","id":"s1","body":{"id":"x","text":"hi"}}`, proto.CodeSpoofed, false},
		{"server-only type", `{"v":1,"type":"welcome","body":{"name":"mallory","session":"x","online":[]}}`, proto.CodeUnknownType, false},
		{"oversized frame", big, proto.CodeTooLarge, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := signaltest.Start(t, signal.Config{})
			bob := login(t, srv.URL, "bob", nil)
			carol := login(t, srv.URL, "carol", nil)
			m := login(t, srv.URL, "mallory", nil)
			m.sendRaw([]byte(tc.raw))
			if tc.closes {
				// The connection is closed with 1009 (message too big),
				// possibly after an error frame saying so.
				for {
					env, err := m.tryRead(5 * time.Second)
					if err != nil {
						if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
							t.Fatalf("got %v, want close 1009", err)
						}
						break
					}
					if env.Type != proto.TypeError {
						continue // presence of the others
					}
					if e, _ := proto.DecodeBody[*proto.Error](env); e.Code != proto.CodeTooLarge {
						t.Fatalf("got %s before close", env.Body)
					}
				}
			} else {
				m.expectError(tc.code)
				// The offender's own session still works.
				chatRoundTrip(t, m, bob, "after")
			}
			chatRoundTrip(t, bob, carol, "ok1")
			chatRoundTrip(t, carol, bob, "ok2")
			deadline := time.Now().Add(5 * time.Second)
			for st := srv.Stats(); st.BadFrames+st.Spoofed == 0; st = srv.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("no counter moved: %+v", st)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestAuthFailures(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{AuthTimeout: 300 * time.Millisecond})
	bob := login(t, srv.URL, "bob", nil)
	carol := login(t, srv.URL, "carol", nil)

	t.Run("message before auth", func(t *testing.T) {
		c, _ := dial(t, srv.URL)
		c.send(proto.TypeChat, "x", "bob", &proto.Chat{ID: "x", Text: "hi"})
		c.expectError(proto.CodeUnauthenticated)
	})
	t.Run("signature over another challenge", func(t *testing.T) {
		c, _ := dial(t, srv.URL)
		_, k, _ := ed25519.GenerateKey(nil)
		c.send(proto.TypeAuth, "a", "", proto.SignAuth(k, "c3RhbGUgY2hhbGxlbmdlIGJ5dGVz", "eve"))
		c.expectError(proto.CodeAuthFailed)
		c.expectClosed()
	})
	t.Run("reserved name", func(t *testing.T) {
		c, challenge := dial(t, srv.URL)
		_, k, _ := ed25519.GenerateKey(nil)
		body, _ := json.Marshal(proto.SignAuth(k, challenge, "server"))
		c.sendRaw([]byte(`{"v":1,"type":"auth","id":"a","body":` + string(body) + `}`))
		c.expectError(proto.CodeBadName)
	})
	t.Run("no auth in time", func(t *testing.T) {
		c, _ := dial(t, srv.URL)
		c.expectError(proto.CodeUnauthenticated)
		c.expectClosed()
	})
	chatRoundTrip(t, bob, carol, "fine")
	if st := srv.Stats(); st.AuthFailures < 1 {
		t.Errorf("auth failures not counted: %+v", st)
	}
}

func TestFloodIsRateLimited(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{RateLimit: 20, RateBurst: 20, MaxViolations: 30})
	bob := login(t, srv.URL, "bob", nil)
	carol := login(t, srv.URL, "carol", nil)
	m := login(t, srv.URL, "mallory", nil)
	// 200 pings at once: the first 20 pass, the rest are refused and the
	// connection is closed after 30 violations.
	for i := 0; i < 200; i++ {
		if err := m.conn.WriteMessage(websocket.TextMessage, []byte(`{"v":1,"type":"ping"}`)); err != nil {
			break // closed by the server mid-flood
		}
	}
	m.expectError(proto.CodeRateLimited)
	m.expectClosed()
	if st := srv.Stats(); st.RateLimited < 30 {
		t.Errorf("rate limited %d, want >= 30", st.RateLimited)
	}
	chatRoundTrip(t, bob, carol, "calm")
}

func TestHealthAndMetrics(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "metrics here")
	})})
	login(t, srv.URL, "alice", nil)
	resp, err := http.Get(srv.HTTP + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Status string
		Online int
	}
	json.NewDecoder(resp.Body).Decode(&h)
	if resp.StatusCode != 200 || h.Status != "ok" || h.Online != 1 {
		t.Fatalf("healthz %d %+v", resp.StatusCode, h)
	}
	resp2, err := http.Get(srv.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if string(b) != "metrics here" {
		t.Fatalf("metrics %q", b)
	}
}

func TestCrossOriginRefused(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	h := http.Header{"Origin": []string{"http://evil.example"}}
	_, resp, err := websocket.DefaultDialer.Dial(srv.URL, h)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin upgrade: err=%v resp=%v", err, resp)
	}
}

// TestOfflineUsersListedAfterRestart: who was here, and their keys, survive
// a server restart, so a newcomer can still seal a message to them.
func TestOfflineUsersListedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	srv := signaltest.Start(t, signal.Config{DataDir: dir})
	alice := login(t, srv.URL, "alice", nil)
	alice.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Online()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("alice still online")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Close()

	srv2 := signaltest.Start(t, signal.Config{DataDir: dir})
	bob := login(t, srv2.URL, "bob", nil)
	p, ok := watch(t, bob, "alice")["alice"]
	if !ok || p.Status != proto.StatusOffline || p.LastSeen == 0 || p.PublicKey == "" {
		t.Fatalf("alice listed as %+v (%v)", p, ok)
	}
}
