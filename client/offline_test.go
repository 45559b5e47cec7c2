package client_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// keys makes a user's identity and encryption keys from a one-byte seed,
// so fuzz corpora stay valid across runs.
func keys(t testing.TB, name string, seed byte) (client.SealKeys, client.SealPeer) {
	t.Helper()
	s := bytes.Repeat([]byte{seed}, 32)
	id := ed25519.NewKeyFromSeed(s)
	s[0] ^= 0xff
	enc, err := ecdh.X25519().NewPrivateKey(s)
	if err != nil {
		t.Fatal(err)
	}
	encKey, encSig := proto.SignEncKey(id, name, enc.PublicKey().Bytes())
	return client.SealKeys{Name: name, Key: id, Enc: enc},
		client.SealPeer{Name: name, Key: id.Public().(ed25519.PublicKey), EncKey: encKey, EncSig: encSig}
}

// TestSealMatchesTheDocumentedScheme recomputes a sealed message's key by
// hand — X25519, then HKDF-SHA256 written out with HMAC as RFC 5869 §2.2
// and §2.3 define it — and opens the ciphertext with AES-256-GCM and the
// documented AAD. The browser page implements the same steps with
// WebCrypto, so this pins down what both sides must compute.
func TestSealMatchesTheDocumentedScheme(t *testing.T) {
	alice, _ := keys(t, "alice", 1)
	bob, bobPeer := keys(t, "bob", 2)
	s, err := client.Seal(alice, bobPeer, &proto.Chat{ID: "m1", Text: "meet at noon", Time: 42})
	if err != nil {
		t.Fatal(err)
	}
	senderEnc, err := ecdh.X25519().NewPublicKey(mustB64(t, s.SenderEnc))
	if err != nil {
		t.Fatal(err)
	}
	shared, err := bob.Enc.ECDH(senderEnc)
	if err != nil {
		t.Fatal(err)
	}
	hm := func(key, data []byte) []byte { m := hmac.New(sha256.New, key); m.Write(data); return m.Sum(nil) }
	prk := hm(s.SaltBytes(), shared)
	info := append([]byte("parley-sealed-v2"), alice.Key.Public().(ed25519.PublicKey)...)
	info = append(info, bob.Key.Public().(ed25519.PublicKey)...)
	okm := hm(prk, append(info, 1)) // one block: L = 32 = HashLen
	blk, _ := aes.NewCipher(okm)
	gcm, _ := cipher.NewGCM(blk)
	plain, err := gcm.Open(nil, s.NonceBytes(), s.CiphertextBytes(), []byte("parley-sealed-v2\nm1\nalice\nbob"))
	if err != nil {
		t.Fatalf("the hand-derived key does not open it: %v", err)
	}
	if string(plain) != `{"id":"m1","text":"meet at noon","ts":42}` {
		t.Fatalf("plaintext %s", plain)
	}
	if len(s.SaltBytes()) != 16 || len(s.NonceBytes()) != 12 || len(s.CiphertextBytes()) != len(plain)+16 {
		t.Fatal("salt, nonce or tag size")
	}
}

func mustB64(t testing.TB, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	alice, _ := keys(t, "alice", 1)
	bob, bobPeer := keys(t, "bob", 2)
	eve, evePeer := keys(t, "eve", 3)
	msg := &proto.Chat{ID: "m1", Text: "meet at noon", Time: 42}
	s, err := client.Seal(alice, bobPeer, msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.CiphertextBytes(), []byte("noon")) {
		t.Fatal("ciphertext contains plaintext")
	}
	got, err := client.Open(bob, "alice", s)
	if err != nil || *got != *msg {
		t.Fatalf("open: %+v, %v", got, err)
	}
	if s2, _ := client.Seal(alice, bobPeer, msg); s2.Salt == s.Salt || s2.Nonce == s.Nonce || s2.Ciphertext == s.Ciphertext {
		t.Fatal("two seals of one message share salt, nonce or ciphertext")
	}
	flip := func(f string) string {
		b := mustB64(t, f)
		b[len(b)-1] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	tests := []struct {
		name string
		me   client.SealKeys
		from string
		mod  func(s *proto.Sealed)
	}{
		{"wrong recipient", eve, "alice", func(s *proto.Sealed) {}},
		{"recipient under another name", client.SealKeys{Name: "bobby", Key: bob.Key, Enc: bob.Enc}, "alice", func(s *proto.Sealed) {}},
		{"re-attributed to another sender", bob, "eve", func(s *proto.Sealed) {}},
		{"forged sender identity", bob, "alice", func(s *proto.Sealed) { s.SenderKey = base64.StdEncoding.EncodeToString(evePeer.Key) }},
		{"sender enc key of someone else", bob, "alice", func(s *proto.Sealed) { s.SenderEnc, s.SenderEncSig = evePeer.EncKey, evePeer.EncSig }},
		{"sender enc key bound to another name", bob, "alice", func(s *proto.Sealed) {
			s.SenderEnc, s.SenderEncSig = proto.SignEncKey(alice.Key, "mallory", alice.Enc.PublicKey().Bytes())
		}},
		{"tampered ciphertext", bob, "alice", func(s *proto.Sealed) { s.Ciphertext = flip(s.Ciphertext) }},
		{"tampered salt", bob, "alice", func(s *proto.Sealed) { s.Salt = flip(s.Salt) }},
		{"tampered nonce", bob, "alice", func(s *proto.Sealed) { s.Nonce = flip(s.Nonce) }},
		{"swapped id", bob, "alice", func(s *proto.Sealed) { s.ID = "m2" }},
		{"no key of our own", client.SealKeys{Name: "bob", Key: bob.Key}, "alice", func(s *proto.Sealed) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s2 := *s
			tc.mod(&s2)
			if m, err := client.Open(tc.me, tc.from, &s2); err == nil {
				t.Fatalf("opened: %+v", m)
			}
		})
	}

	// Seal refuses a peer whose encryption key is not bound to the
	// identity key we trust, or whose key agreement would be trivial.
	zeroKey, zeroSig := proto.SignEncKey(bob.Key, "bob", make([]byte, 32))
	refused := []struct {
		name string
		peer client.SealPeer
	}{
		{"binding by another identity", client.SealPeer{Name: "bob", Key: evePeer.Key, EncKey: bobPeer.EncKey, EncSig: bobPeer.EncSig}},
		{"binding for another name", client.SealPeer{Name: "bobby", Key: bobPeer.Key, EncKey: bobPeer.EncKey, EncSig: bobPeer.EncSig}},
		{"no encryption key", client.SealPeer{Name: "bob", Key: bobPeer.Key}},
		{"low-order encryption key", client.SealPeer{Name: "bob", Key: bobPeer.Key, EncKey: zeroKey, EncSig: zeroSig}},
	}
	for _, tc := range refused {
		t.Run("seal: "+tc.name, func(t *testing.T) {
			if _, err := client.Seal(alice, tc.peer, msg); !errors.Is(err, client.ErrBadKey) {
				t.Fatalf("got %v, want ErrBadKey", err)
			}
		})
	}
}

// FuzzOpen: a sealed body from anyone either fails to open with an error
// or opens to a valid chat message carrying the envelope's id. Seeds are
// real seals between fixed keys, so mutations reach the AEAD.
func FuzzOpen(f *testing.F) {
	alice, _ := keys(f, "alice", 1)
	bob, bobPeer := keys(f, "bob", 2)
	for _, text := range []string{"hi", "a longer message — with ünïcødé and \"quotes\""} {
		s, err := client.Seal(alice, bobPeer, &proto.Chat{ID: "m1", Text: text, Time: 7})
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(s)
		f.Add(b, "alice")
	}
	f.Fuzz(func(t *testing.T, body []byte, from string) {
		var s proto.Sealed
		if json.Unmarshal(body, &s) != nil {
			return
		}
		m, err := client.Open(bob, from, &s)
		if err != nil {
			return
		}
		if m.ID != s.ID || m.Validate() != nil {
			t.Fatalf("opened %+v from sealed id %q", m, s.ID)
		}
	})
}

func TestLoadOrCreateEncKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profile")
	k1, err := client.LoadOrCreateEncKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := client.LoadOrCreateEncKey(dir)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("second load: %v (same key: %v)", err, err == nil && k1.Equal(k2))
	}
	id, _ := client.LoadOrCreateIdentity(dir)
	if idEnc, _ := ecdh.X25519().NewPrivateKey(id.Seed()); idEnc.Equal(k1) {
		t.Fatal("encryption key is the identity seed")
	}
	st, err := os.Stat(filepath.Join(dir, "encryption.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	os.WriteFile(filepath.Join(dir, "encryption.pem"), []byte("-----BEGIN PARLEY ED25519 PRIVATE KEY-----\nAAAA\n-----END PARLEY ED25519 PRIVATE KEY-----\n"), 0o600)
	if _, err := client.LoadOrCreateEncKey(dir); err == nil {
		t.Fatal("a file of the wrong kind was accepted")
	}
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
	// Bob keeps his encryption key in a profile, as `parley chat` does.
	bobEnc, err := client.LoadOrCreateEncKey(filepath.Join(t.TempDir(), "bob"))
	if err != nil {
		t.Fatal(err)
	}
	withEnc := func(c *client.Config) { c.EncKey = bobEnc }
	bob := startClient(t, srv.URL, "bob", bobKey, withEnc)
	bob.ev.Wait(t, wait, "bob ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	bob.stop()

	// Bob is offline: the welcome lists him with his encryption key, which
	// alice checks against the identity key her contacts (PeerKey) pinned.
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
	if raw := testutil.ReadTree(t, dir); bytes.Contains(raw, []byte("secret words")) {
		t.Fatal("server store holds plaintext")
	}

	// Bob's store fails first: no receipt, so the server keeps them.
	st := &memStore{fail: true, msgs: map[string]client.MessageEvent{}}
	bob = startClient(t, srv.URL, "bob", bobKey, func(c *client.Config) { c.Store = st; withEnc(c) })
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
	bob = startClient(t, srv.URL, "bob", bobKey, func(c *client.Config) { c.Store = st; withEnc(c) })
	for _, text := range texts {
		bob.ev.Wait(t, wait, "bob gets "+text, message("alice", text))
	}
	for _, id := range ids {
		alice.ev.Wait(t, wait, "delivered "+id, func(e client.Event) bool {
			d, ok := e.(client.DeliveredEvent)
			return ok && d.ID == id && d.Path == "server"
		})
	}
	waitUntil(t, "mailbox empty", func() bool { n, _ := srv.OfflineWaiting("bob"); return n == 0 })
	// Exactly once, in order.
	var got []string
	for _, e := range bob.ev.All() {
		if m, ok := e.(client.MessageEvent); ok {
			if m.Path != "server" {
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

// TestSealRefusedForUnpinnedKey: when the encryption key presence shows
// for an offline peer is not bound to the identity key the user pinned
// for them, nothing is sealed or stored, and the message fails in words.
func TestSealRefusedForUnpinnedKey(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	bob := startClient(t, srv.URL, "bob", nil, nil)
	bob.ev.Wait(t, wait, "bob ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	bob.stop()
	pinned, _, _ := ed25519.GenerateKey(nil)
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.PeerKey = func(string) ed25519.PublicKey { return pinned }
		c.Contacts = []string{"bob"} // offline people are heard of as contacts
	})
	alice.ev.Wait(t, wait, "bob listed offline", offline("bob"))
	id, err := alice.Send(context.Background(), "bob", "for the real bob only")
	if err != nil {
		t.Fatal(err)
	}
	e := alice.ev.Wait(t, wait, "not delivered", func(e client.Event) bool {
		x, ok := e.(client.ErrorEvent)
		return ok && x.Ref == id
	}).(client.ErrorEvent)
	if e.Err.Code != proto.CodeForbidden || !strings.Contains(e.Err.Message, "not delivered") || !strings.Contains(e.Err.Message, "not signed by its identity key") {
		t.Fatalf("error %v", e.Err)
	}
	if n := alice.ev.Count(func(e client.Event) bool { _, ok := e.(client.StoredEvent); return ok }); n != 0 {
		t.Fatal("sealed to a key that is not bound to the pinned one")
	}
	if n, _ := srv.OfflineWaiting("bob"); n != 0 {
		t.Fatalf("%d waiting for bob", n)
	}
}
