package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"golang.org/x/crypto/curve25519"
)

func TestX25519FromEd25519(t *testing.T) {
	for i := 0; i < 50; i++ {
		pub, priv, _ := ed25519.GenerateKey(nil)
		x, err := client.X25519Public(pub)
		if err != nil {
			t.Fatal(err)
		}
		want, err := curve25519.X25519(client.X25519Private(priv)[:], curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x[:], want) {
			t.Fatalf("key %d: converted public key does not match the private scalar", i)
		}
	}
	if _, err := client.X25519Public(make([]byte, 5)); !errors.Is(err, client.ErrBadKey) {
		t.Fatalf("short key: %v", err)
	}
}

func TestSealOpen(t *testing.T) {
	_, alice, _ := ed25519.GenerateKey(nil)
	bobPub, bob, _ := ed25519.GenerateKey(nil)
	_, eve, _ := ed25519.GenerateKey(nil)
	msg := &proto.Chat{ID: "m1", Text: "meet at noon", Time: 42}
	s, err := client.Seal(alice, bobPub, msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.BoxBytes(), []byte("noon")) {
		t.Fatal("box contains plaintext")
	}
	got, err := client.Open(bob, s)
	if err != nil || *got != *msg {
		t.Fatalf("open: %+v, %v", got, err)
	}
	tests := []struct {
		name string
		mod  func(s proto.Sealed) (ed25519.PrivateKey, proto.Sealed)
	}{
		{"wrong recipient", func(s proto.Sealed) (ed25519.PrivateKey, proto.Sealed) { return eve, s }},
		{"forged sender", func(s proto.Sealed) (ed25519.PrivateKey, proto.Sealed) {
			s.SenderKey = mustSealed(t, eve, bobPub).SenderKey
			return bob, s
		}},
		{"tampered box", func(s proto.Sealed) (ed25519.PrivateKey, proto.Sealed) {
			b := s.BoxBytes()
			b[len(b)-1] ^= 1
			s.Box = base64.StdEncoding.EncodeToString(b)
			return bob, s
		}},
		{"swapped id", func(s proto.Sealed) (ed25519.PrivateKey, proto.Sealed) { s.ID = "m2"; return bob, s }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, s2 := tc.mod(*s)
			if _, err := client.Open(k, &s2); err == nil {
				t.Fatal("opened")
			}
		})
	}
}

func mustSealed(t *testing.T, from ed25519.PrivateKey, to ed25519.PublicKey) *proto.Sealed {
	s, err := client.Seal(from, to, &proto.Chat{ID: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// memStore is a MessageStore that can be told to fail.
type memStore struct {
	mu   sync.Mutex
	fail bool
	msgs map[string]client.MessageEvent
}

func (s *memStore) SaveIncoming(m client.MessageEvent) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return false, errors.New("disk full")
	}
	k := m.From + "/" + m.ID
	if _, ok := s.msgs[k]; ok {
		return false, nil
	}
	s.msgs[k] = m
	return true, nil
}

func TestOfflineMessageEndToEnd(t *testing.T) {
	dir := t.TempDir()
	srv := signaltest.Start(t, signal.Config{DataDir: dir})
	_, bobKey, _ := ed25519.GenerateKey(nil)
	bob := startClient(t, srv.URL, "bob", bobKey, nil)
	bob.ev.Wait(t, wait, "bob ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	bob.stop()

	// Bob is offline, so presence has no key for him: alice's contacts
	// (PeerKey) know it.
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.PeerKey = func(string) ed25519.PublicKey { return bobKey.Public().(ed25519.PublicKey) }
	})
	alice.ev.Wait(t, wait, "alice ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	ctx := context.Background()
	texts := []string{"first secret words", "second secret words", "third secret words"}
	var ids []string
	for _, text := range texts {
		id, err := alice.Send(ctx, "bob", text)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		alice.ev.Wait(t, wait, "stored "+id, func(e client.Event) bool { s, ok := e.(client.StoredEvent); return ok && s.ID == id })
	}
	raw, err := os.ReadFile(filepath.Join(dir, "signal.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("secret words")) {
		t.Fatal("server store holds plaintext")
	}

	// Bob's store fails first: no receipt, so the server keeps them.
	st := &memStore{fail: true, msgs: map[string]client.MessageEvent{}}
	bob = startClient(t, srv.URL, "bob", bobKey, func(c *client.Config) { c.Store = st })
	bob.ev.Wait(t, wait, "store error", func(e client.Event) bool {
		x, ok := e.(client.ErrorEvent)
		return ok && x.Err.Code == proto.CodeInternal
	})
	if n, _ := srv.OfflineWaiting("bob"); n != 3 {
		t.Fatalf("%d waiting after a failed store, want 3", n)
	}
	bob.stop()
	st.mu.Lock()
	st.fail = false
	st.mu.Unlock()
	bob = startClient(t, srv.URL, "bob", bobKey, func(c *client.Config) { c.Store = st })
	for _, text := range texts {
		bob.ev.Wait(t, wait, "bob gets "+text, message("alice", text))
	}
	for _, id := range ids {
		alice.ev.Wait(t, wait, "delivered "+id, func(e client.Event) bool {
			d, ok := e.(client.DeliveredEvent)
			return ok && d.ID == id && d.Path == "offline"
		})
	}
	waitUntil(t, "mailbox empty", func() bool { n, _ := srv.OfflineWaiting("bob"); return n == 0 })
	// Exactly once, in order.
	var got []string
	for _, e := range bob.ev.All() {
		if m, ok := e.(client.MessageEvent); ok {
			if m.Path != "offline" {
				t.Fatalf("path %q", m.Path)
			}
			got = append(got, m.Text)
		}
	}
	if len(got) != 3 || got[0] != texts[0] || got[2] != texts[2] {
		t.Fatalf("bob got %q", got)
	}
}

func TestSealedFromUntrustedKeyRefused(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	_, bobKey, _ := ed25519.GenerateKey(nil)
	bob := startClient(t, srv.URL, "bob", bobKey, nil)
	bob.ev.Wait(t, wait, "bob ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	bob.stop()
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.PeerKey = func(string) ed25519.PublicKey { return bobKey.Public().(ed25519.PublicKey) }
	})
	alice.ev.Wait(t, wait, "alice ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	id, _ := alice.Send(context.Background(), "bob", "hello")
	alice.ev.Wait(t, wait, "stored", func(e client.Event) bool { s, ok := e.(client.StoredEvent); return ok && s.ID == id })

	// Bob pinned another key for alice: the message is refused and stays.
	other, _, _ := ed25519.GenerateKey(nil)
	bob = startClient(t, srv.URL, "bob", bobKey, func(c *client.Config) {
		c.PeerKey = func(name string) ed25519.PublicKey { return other }
	})
	bob.ev.Wait(t, wait, "refused", func(e client.Event) bool {
		x, ok := e.(client.ErrorEvent)
		return ok && x.Err.Code == proto.CodeForbidden
	})
	if n := bob.ev.Count(message("alice", "hello")); n != 0 {
		t.Fatal("message from an untrusted key was shown")
	}
	if n, _ := srv.OfflineWaiting("bob"); n != 1 {
		t.Fatalf("%d waiting, want 1", n)
	}
}
