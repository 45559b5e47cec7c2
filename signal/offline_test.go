package signal_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"golang.org/x/crypto/nacl/box"
)

// sealFor builds a sealed message from c with a real NaCl box over text.
// (The server never opens it; the client package tests the key conversion.)
func sealFor(t testing.TB, c *wsClient, id, text string) *proto.Sealed {
	t.Helper()
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	sealed := box.Seal(nil, []byte(`{"id":"`+id+`","text":"`+text+`"}`), &nonce, pub, priv)
	return &proto.Sealed{
		ID:        id,
		SenderKey: base64.StdEncoding.EncodeToString(c.key.Public().(ed25519.PublicKey)),
		Nonce:     base64.StdEncoding.EncodeToString(nonce[:]),
		Box:       base64.StdEncoding.EncodeToString(sealed),
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

	// The store holds only ciphertext.
	raw, err := os.ReadFile(filepath.Join(dir, "signal.db"))
	if err != nil {
		t.Fatal(err)
	}
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
		{name: "count", lim: signal.OfflineLimits{MaxMessages: 2}, to: "bob", n: 2, code: proto.CodeOverBudget, wants: "2 offline messages"},
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
