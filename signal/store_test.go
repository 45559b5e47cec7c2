package signal

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
)

// These tests run against the state layer itself (what replaced the bbolt
// registry and mailbox): the users bucket's first-key-wins binding and
// the mail and receipt streams' limits.

func newTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestBindFirstKeyWins: of many identities racing for one name, exactly
// one gets it; its encryption key is kept, replaced by a newer one from
// the same identity, and never touched by another key's attempt.
func TestBindFirstKeyWins(t *testing.T) {
	s := newTestServer(t, Config{})
	ctx := context.Background()
	const racers = 8
	keys := make([]ed25519.PrivateKey, racers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := 0
	for i := range keys {
		_, keys[i], _ = ed25519.GenerateKey(nil)
		wg.Add(1)
		go func(k ed25519.PrivateKey) {
			defer wg.Done()
			isNew, err := s.users.bind(ctx, "alice", k.Public().(ed25519.PublicKey), encBinding{}, time.Now(), nil)
			switch {
			case err == nil && isNew:
				mu.Lock()
				winners++
				mu.Unlock()
			case errors.Is(err, ErrNameTaken):
			default:
				t.Errorf("bind: new=%v err=%v", isNew, err)
			}
		}(keys[i])
	}
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d identities got the name, want 1", winners)
	}
	r, _, ok, err := s.users.fetch(ctx, "alice")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	var owner ed25519.PrivateKey
	for _, k := range keys {
		if k.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(r.Key)) {
			owner = k
		}
	}
	if owner == nil {
		t.Fatal("the bound key is none of the racers'")
	}
	for _, k := range keys {
		_, err := s.users.bind(ctx, "alice", k.Public().(ed25519.PublicKey), encBinding{}, time.Now(), nil)
		if k.Equal(owner) != (err == nil) {
			t.Fatalf("bind by %s owner: %v", map[bool]string{true: "the", false: "not the"}[k.Equal(owner)], err)
		}
	}
}

// TestMailStreamLimits: a stored message is found by recipient, sender
// and id (so it is not stored twice); the per-sender quota refuses the next message; receipts
// beyond their cap push out the oldest; messages past their age go.
func TestMailStreamLimits(t *testing.T) {
	s := newTestServer(t, Config{Offline: OfflineLimits{MaxMessages: 10, MaxPerSender: 2, MaxReceipts: 2, MaxAge: 2 * time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := func(from, id string) error {
		_, err := s.st.js.Publish(ctx, mailSubject("bob", from), []byte(`{"from":"`+from+`","sealed":{"id":"`+id+`"}}`))
		return err
	}
	for _, id := range []string{"a", "b"} {
		if err := pub("alice", id); err != nil {
			t.Fatalf("store %s: %v", id, err)
		}
	}
	if dup, err := s.offline.stored(ctx, "bob", "alice", "a"); !dup || err != nil {
		t.Fatalf("a stored: %v %v", dup, err)
	}
	if dup, _ := s.offline.stored(ctx, "bob", "carol", "a"); dup {
		t.Fatal("another sender's id counted as stored")
	}
	err := pub("alice", "c")
	if pe := s.offline.storeError("bob", err); err == nil || pe.Code != proto.CodeOverBudget {
		t.Fatalf("third message of one sender: %v (%v)", err, pe)
	}
	if err := pub("carol", "x"); err != nil {
		t.Fatalf("another sender's message: %v", err)
	}
	if n, _ := s.offline.waiting(ctx, "bob"); n != 3 {
		t.Fatalf("%d waiting, want 3 (a, b from alice, x from carol)", n)
	}
	for i := range 3 {
		if _, err := s.st.js.Publish(ctx, rcptSubject("alice"), fmt.Appendf(nil, `{"by":"bob","id":"r%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	rcs, err := s.st.directBatch(ctx, streamRcpt, rcptSubject("alice"), 1, 10)
	if err != nil || len(rcs) != 2 || string(rcs[0].data) != `{"by":"bob","id":"r1"}` {
		t.Fatalf("receipts %v %v, want r1 and r2", rcs, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := s.offline.waiting(ctx, "bob"); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("messages outlived their age limit")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
