package signal_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	bolt "go.etcd.io/bbolt"
)

// sealFor builds a sealed message from c over text with real AES-256-GCM
// under a random key (the server never opens it; the client package tests
// the scheme), carrying c's encryption key bound to its identity and name.
func sealFor(t testing.TB, c *wsClient, id, text string) *proto.Sealed {
	t.Helper()
	key := make([]byte, 32)
	salt := make([]byte, proto.SealedSaltSize)
	nonce := make([]byte, proto.SealedNonce)
	rand.Read(key)
	rand.Read(salt)
	rand.Read(nonce)
	blk, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(blk)
	ct := gcm.Seal(nil, nonce, []byte(`{"id":"`+id+`","text":"`+text+`"}`), proto.SealedAAD(id, c.name, "bob"))
	enc, sig := proto.SignEncKey(c.key, c.name, c.encPub())
	return &proto.Sealed{
		V:            proto.SealedVersion,
		ID:           id,
		SenderKey:    base64.StdEncoding.EncodeToString(c.key.Public().(ed25519.PublicKey)),
		SenderEnc:    enc,
		SenderEncSig: sig,
		Salt:         base64.StdEncoding.EncodeToString(salt),
		Nonce:        base64.StdEncoding.EncodeToString(nonce),
		Ciphertext:   base64.StdEncoding.EncodeToString(ct),
	}
}

// encPub is c's X25519 encryption key: made from its identity seed (and
// a variant byte), so the same identity and variant give the same key.
func (c *wsClient) encPubV(variant byte) []byte {
	h := sha256.Sum256(append(c.key.Seed(), variant))
	k, err := ecdh.X25519().NewPrivateKey(h[:])
	if err != nil {
		c.t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

func (c *wsClient) encPub() []byte { return c.encPubV(0) }

// loginEnc logs in like login, announcing the encryption key of variant.
func loginEnc(t testing.TB, url, name string, key ed25519.PrivateKey, variant byte) (*wsClient, *proto.Welcome) {
	t.Helper()
	c, challenge := dial(t, url)
	c.name, c.key = name, key
	a := proto.SignAuth(key, challenge, name)
	a.EncKey, a.EncSig = proto.SignEncKey(key, name, c.encPubV(variant))
	c.send(proto.TypeAuth, "auth-1", "", a)
	env := c.read()
	if env.Type != proto.TypeWelcome {
		t.Fatalf("%s: got %s %s, want welcome", name, env.Type, env.Body)
	}
	w, err := proto.DecodeBody[*proto.Welcome](env)
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

// TestEncKeysInPresence: the encryption key a user signs in with reaches
// others — in the welcome and presence while online, in the offline
// presence and in later welcomes while offline — always with a binding
// that verifies against the user's identity key; a new key from the same
// identity replaces it, in the registry too (across a restart).
func TestEncKeysInPresence(t *testing.T) {
	dir := t.TempDir()
	url, stop := runServer(t, signal.Config{DataDir: dir})
	_, bobKey, _ := ed25519.GenerateKey(nil)
	bobPub := bobKey.Public().(ed25519.PublicKey)
	bound := func(p proto.Presence, want []byte) {
		t.Helper()
		got, err := proto.VerifyEncKey(bobPub, "bob", p.EncKey, p.EncSig)
		if err != nil || !bytes.Equal(got, want) || p.PublicKey != base64.StdEncoding.EncodeToString(bobPub) {
			t.Fatalf("bob's entry %+v: %v", p, err)
		}
	}
	alice, _ := loginEnc(t, url, "alice", newKey(), 0)
	watch(t, alice, "bob")
	bob, _ := loginEnc(t, url, "bob", bobKey, 0)
	p, _ := presenceOf(alice, "bob")
	bound(*p, bob.encPub())
	carol, _ := loginEnc(t, url, "carol", newKey(), 0)
	e, ok := watch(t, carol, "bob")["bob"]
	if !ok || e.Status != proto.StatusOnline {
		t.Fatalf("carol sees bob as %+v", e)
	}
	bound(e, bob.encPub())

	bob.conn.Close()
	p, _ = presenceOf(alice, "bob")
	if p.Status != proto.StatusOffline {
		t.Fatalf("presence %+v", p)
	}
	bound(*p, bob.encPub())
	dave, _ := loginEnc(t, url, "dave", newKey(), 0)
	if e, ok = watch(t, dave, "bob")["bob"]; !ok || e.Status != proto.StatusOffline || e.LastSeen == 0 {
		t.Fatalf("dave sees bob as %+v", e)
	}
	bound(e, bob.encPub())

	// Bob comes back with a new encryption key; then without any (an old
	// client): the registry keeps the newest.
	bob, _ = loginEnc(t, url, "bob", bobKey, 1)
	p, _ = presenceOf(alice, "bob")
	bound(*p, bob.encPubV(1))
	bob.conn.Close()
	presenceOf(alice, "bob")
	bob = login(t, url, "bob", bobKey)
	p, _ = presenceOf(alice, "bob")
	bound(*p, bob.encPubV(1))
	bob.conn.Close()
	presenceOf(alice, "bob")
	stop()

	// After a restart the registry still has it: bob, seen offline again
	// (announcing no key this time), is listed with it.
	url, _ = runServer(t, signal.Config{DataDir: dir})
	login(t, url, "bob", bobKey).conn.Close()
	erin, _ := loginEnc(t, url, "erin", newKey(), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if e, ok = watch(t, erin, "bob")["bob"]; ok && e.Status == proto.StatusOffline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob not listed offline: %+v", e)
		}
		time.Sleep(20 * time.Millisecond)
	}
	bound(e, bob.encPubV(1))
}

// presenceOf reads c's frames until a presence about name.
func presenceOf(c *wsClient, name string) (*proto.Presence, error) {
	c.t.Helper()
	for i := 0; i < 100; i++ {
		p, err := proto.DecodeBody[*proto.Presence](c.readUntil(proto.TypePresence))
		if err != nil || p.Name == name {
			return p, err
		}
	}
	c.t.Fatalf("%s: no presence of %s", c.name, name)
	return nil, nil
}

func newKey() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(nil)
	return k
}

// TestAuthWithUnboundEncKeyRefused: an encryption key whose binding does
// not verify for the name and identity ends the sign-in.
func TestAuthWithUnboundEncKeyRefused(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	_, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	tests := []struct {
		name string
		mod  func(a *proto.Auth, c *wsClient)
	}{
		{"signed by another identity", func(a *proto.Auth, c *wsClient) { a.EncKey, a.EncSig = proto.SignEncKey(other, "alice", c.encPub()) }},
		{"bound to another name", func(a *proto.Auth, c *wsClient) { a.EncKey, a.EncSig = proto.SignEncKey(key, "bob", c.encPub()) }},
		{"signature of another key", func(a *proto.Auth, c *wsClient) {
			_, a.EncSig = proto.SignEncKey(key, "alice", c.encPubV(1))
			a.EncKey, _ = proto.SignEncKey(key, "alice", c.encPub())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, challenge := dial(t, srv.URL)
			c.name, c.key = "alice", key
			a := proto.SignAuth(key, challenge, "alice")
			tc.mod(a, c)
			c.send(proto.TypeAuth, "a", "", a)
			c.expectError(proto.CodeAuthFailed)
			c.expectClosed()
		})
	}
	if got := srv.Online(); len(got) != 0 {
		t.Fatalf("online after refused sign-ins: %v", got)
	}
}

// runServer serves cfg on 127.0.0.1 until the returned stop is called.
func runServer(t testing.TB, cfg signal.Config) (url string, stop func()) {
	t.Helper()
	srv, err := signal.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && !errors.Is(err, signal.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return "ws://" + ln.Addr().String() + "/ws", stop
}

func sealedIDs(t *testing.T, c *wsClient, n int) []string {
	t.Helper()
	var ids []string
	for len(ids) < n {
		env := c.readUntil(proto.TypeSealed)
		s, err := proto.DecodeBody[*proto.Sealed](env)
		if err != nil {
			t.Fatal(err)
		}
		if env.From != "alice" || s.Stored == 0 {
			t.Fatalf("sealed from %q stored %d", env.From, s.Stored)
		}
		ids = append(ids, s.ID)
	}
	return ids
}

func TestOfflineDeliveredOnceInOrderAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	_, bobKey, _ := ed25519.GenerateKey(nil)
	_, aliceKey, _ := ed25519.GenerateKey(nil)
	url, stop := runServer(t, signal.Config{DataDir: dir})

	bob := login(t, url, "bob", bobKey) // registers the name
	bob.conn.Close()
	alice := login(t, url, "alice", aliceKey)
	want := []string{"m1", "m2", "m3"}
	for _, id := range want {
		alice.send(proto.TypeSealed, id, "bob", sealFor(t, alice, id, "secret-plaintext-"+id))
		if a, _ := proto.DecodeBody[*proto.Ack](alice.readUntil(proto.TypeAck)); a.Ref != id {
			t.Fatalf("ack %s, want %s", a.Ref, id)
		}
	}
	alice.conn.Close()
	stop()

	// The store (the embedded NATS server's JetStream files) holds only
	// ciphertext.
	raw := testutil.ReadTree(t, dir)
	if bytes.Contains(raw, []byte("secret-plaintext")) {
		t.Fatal("the server's store contains plaintext")
	}
	if !bytes.Contains(raw, []byte(`"from":"alice"`)) {
		t.Fatal("the store does not hold the messages at all")
	}

	url, _ = runServer(t, signal.Config{DataDir: dir})
	bob = login(t, url, "bob", bobKey)
	if got := sealedIDs(t, bob, 3); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	// Not acknowledged: delivered again at the next sign-in, in order.
	bob.conn.Close()
	bob = login(t, url, "bob", bobKey)
	if got := sealedIDs(t, bob, 3); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("redelivered %v, want %v", got, want)
	}
	for _, id := range want {
		bob.send(proto.TypeDelivered, "r-"+id, "alice", &proto.Receipt{ID: id})
		if a, _ := proto.DecodeBody[*proto.Ack](bob.readUntil(proto.TypeAck)); a.Ref != "r-"+id {
			t.Fatalf("receipt ack %s", a.Ref)
		}
	}
	// Acknowledged: never again.
	bob.conn.Close()
	bob = login(t, url, "bob", bobKey)
	if env, err := bob.tryRead(300 * time.Millisecond); err == nil && env.Type == proto.TypeSealed {
		t.Fatalf("delivered twice: %s", env.Body)
	}
	// Alice was offline: the receipts wait for her, in order.
	alice = login(t, url, "alice", aliceKey)
	for _, id := range want {
		env := alice.readUntil(proto.TypeSealedReceipt)
		r, err := proto.DecodeBody[*proto.Receipt](env)
		if err != nil || r.ID != id || env.From != "bob" {
			t.Fatalf("receipt %+v from %q, want %s from bob (%v)", r, env.From, id, err)
		}
	}
}

func TestOfflineLiveRecipientAndReceipt(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := login(t, srv.URL, "alice", nil)
	bob := login(t, srv.URL, "bob", nil)
	alice.send(proto.TypeSealed, "s1", "bob", sealFor(t, alice, "s1", "hello"))
	alice.readUntil(proto.TypeAck)
	if got := sealedIDs(t, bob, 1); got[0] != "s1" {
		t.Fatalf("got %v", got)
	}
	bob.send(proto.TypeDelivered, "r1", "alice", &proto.Receipt{ID: "s1"})
	env := alice.readUntil(proto.TypeSealedReceipt)
	if r, _ := proto.DecodeBody[*proto.Receipt](env); r.ID != "s1" || env.From != "bob" {
		t.Fatalf("receipt %s from %s", env.Body, env.From)
	}
	if n, err := srv.OfflineWaiting("bob"); err != nil || n != 0 {
		t.Fatalf("waiting %d, %v", n, err)
	}
}

func TestOfflineLimits(t *testing.T) {
	big := make([]byte, 600)
	for i := range big {
		big[i] = 'x'
	}
	tests := []struct {
		name  string
		lim   signal.OfflineLimits
		send  func(t *testing.T, a *wsClient, i int) *proto.Sealed
		to    string
		n     int // messages that must be accepted first
		code  proto.Code
		wants string
	}{
		{name: "count", lim: signal.OfflineLimits{MaxMessages: 2, MaxPerSender: 2}, to: "bob", n: 2, code: proto.CodeOverBudget, wants: "2 offline messages"},
		{name: "bytes", lim: signal.OfflineLimits{MaxBytes: 2000}, to: "bob", n: 2, code: proto.CodeOverBudget,
			send: func(t *testing.T, a *wsClient, i int) *proto.Sealed {
				return sealFor(t, a, fmt.Sprint("b", i), string(big))
			}},
		{name: "message size", lim: signal.OfflineLimits{MaxMessageBytes: 100}, to: "bob", code: proto.CodeTooLarge,
			send: func(t *testing.T, a *wsClient, i int) *proto.Sealed {
				return sealFor(t, a, fmt.Sprint("b", i), string(big))
			}},
		{name: "unknown recipient", to: "nobody", code: proto.CodeNotFound},
		{name: "forged sender key", to: "bob", code: proto.CodeForbidden,
			send: func(t *testing.T, a *wsClient, i int) *proto.Sealed {
				s := sealFor(t, a, "f", "x")
				other, _, _ := ed25519.GenerateKey(nil)
				s.SenderKey = base64.StdEncoding.EncodeToString(other)
				return s
			}},
		{name: "sender enc key not bound to the sender", to: "bob", code: proto.CodeForbidden,
			send: func(t *testing.T, a *wsClient, i int) *proto.Sealed {
				s := sealFor(t, a, "f", "x")
				_, other, _ := ed25519.GenerateKey(nil)
				s.SenderEnc, s.SenderEncSig = proto.SignEncKey(other, a.name, a.encPub())
				return s
			}},
		{name: "sender enc key bound to another name", to: "bob", code: proto.CodeForbidden,
			send: func(t *testing.T, a *wsClient, i int) *proto.Sealed {
				s := sealFor(t, a, "f", "x")
				s.SenderEnc, s.SenderEncSig = proto.SignEncKey(a.key, "mallory", a.encPub())
				return s
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := signaltest.Start(t, signal.Config{Offline: tc.lim})
			login(t, srv.URL, "bob", nil).conn.Close()
			alice := login(t, srv.URL, "alice", nil)
			mk := tc.send
			if mk == nil {
				mk = func(t *testing.T, a *wsClient, i int) *proto.Sealed { return sealFor(t, a, fmt.Sprint("m", i), "hi") }
			}
			for i := 0; i < tc.n; i++ {
				id := fmt.Sprint("ok", i)
				s := mk(t, alice, i)
				s.ID = id
				alice.send(proto.TypeSealed, id, tc.to, s)
				if env := alice.readUntil(proto.TypeAck); env == nil {
					t.Fatal("no ack")
				}
			}
			alice.send(proto.TypeSealed, "last", tc.to, mk(t, alice, 99))
			e := alice.expectError(tc.code)
			if e.Ref != "last" || tc.wants != "" && !bytes.Contains([]byte(e.Message), []byte(tc.wants)) {
				t.Fatalf("error %+v", e)
			}
			if n, _ := srv.OfflineWaiting(tc.to); n != tc.n {
				t.Fatalf("%d waiting, want %d", n, tc.n)
			}
		})
	}
}

// TestRetiredSealedDropped: a message stored under the retired NaCl
// scheme (v1: 24-byte nonce, "box") can be opened by no client; the server
// drops it at delivery instead of holding it against the limits.
func TestRetiredSealedDropped(t *testing.T) {
	dir := t.TempDir()
	_, bobKey, _ := ed25519.GenerateKey(nil)
	url, stop := runServer(t, signal.Config{DataDir: dir})
	login(t, url, "bob", bobKey).conn.Close()
	stop()
	db, err := bolt.Open(filepath.Join(dir, "signal.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := `{"from":"alice","sealed":{"id":"old1","sender_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","box":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw==","stored":` +
		fmt.Sprint(time.Now().UnixMilli()) + `}}`
	if err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists([]byte("offline"))
		if err != nil {
			return err
		}
		bk, err := root.CreateBucketIfNotExists([]byte("bob"))
		if err != nil {
			return err
		}
		return bk.Put([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte(v1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	srv := signaltest.Start(t, signal.Config{DataDir: dir})
	if n, _ := srv.OfflineWaiting("bob"); n != 1 {
		t.Fatalf("%d waiting before sign-in, want the old one", n)
	}
	bob := login(t, srv.URL, "bob", bobKey)
	// A live sealed message after it arrives; the old one never does.
	alice := login(t, srv.URL, "alice", nil)
	alice.send(proto.TypeSealed, "new1", "bob", sealFor(t, alice, "new1", "hello"))
	if got := sealedIDs(t, bob, 1); got[0] != "new1" {
		t.Fatalf("bob got %v first, want new1", got)
	}
	if n, _ := srv.OfflineWaiting("bob"); n != 1 {
		t.Fatalf("%d waiting, want only new1", n)
	}
}
