package signal_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	bolt "go.etcd.io/bbolt"
)

// writeBoltStore writes dir/signal.db the way servers before NATS kept
// their state: names, encryption keys, last-seen times, offline messages
// per recipient and receipts per sender.
func writeBoltStore(t *testing.T, dir string, fill func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "signal.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
}

func seqKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func put(tx *bolt.Tx, path []string, k, v []byte) error {
	b, err := tx.CreateBucketIfNotExists([]byte(path[0]))
	if err != nil {
		return err
	}
	for _, p := range path[1:] {
		if b, err = b.CreateBucketIfNotExists([]byte(p)); err != nil {
			return err
		}
	}
	return b.Put(k, v)
}

// TestMigrateFromBolt: a data directory of the bbolt era is imported at
// the first start: names stay bound to their keys, encryption keys and
// last-seen times carry over, waiting sealed messages are delivered in
// order and waiting receipts reach their sender; the old file is kept
// aside and not imported twice.
func TestMigrateFromBolt(t *testing.T) {
	dir := t.TempDir()
	bobKey, aliceKey := newKey(), newKey()
	bob := &wsClient{t: t, name: "bob", key: bobKey}
	alice := &wsClient{t: t, name: "alice", key: aliceKey}
	bobEnc, bobSig := proto.SignEncKey(bobKey, "bob", bob.encPub())
	seen := time.Now().Add(-time.Hour).UnixMilli()
	var msgs [][]byte
	for _, id := range []string{"m1", "m2", "m3"} {
		s := sealFor(t, alice, id, "secret "+id)
		s.Stored = time.Now().UnixMilli()
		b, _ := json.Marshal(map[string]any{"from": "alice", "sealed": s})
		msgs = append(msgs, b)
	}
	writeBoltStore(t, dir, func(tx *bolt.Tx) error {
		for name, k := range map[string]ed25519.PrivateKey{"bob": bobKey, "alice": aliceKey} {
			if err := put(tx, []string{"names"}, []byte(name), k.Public().(ed25519.PublicKey)); err != nil {
				return err
			}
		}
		ek, _ := base64.StdEncoding.DecodeString(bobEnc)
		es, _ := base64.StdEncoding.DecodeString(bobSig)
		if err := put(tx, []string{"enc_keys"}, []byte("bob"), append(ek, es...)); err != nil {
			return err
		}
		if err := put(tx, []string{"last_seen"}, []byte("bob"), binary.BigEndian.AppendUint64(nil, uint64(seen))); err != nil {
			return err
		}
		for i, m := range msgs {
			if err := put(tx, []string{"offline", "bob"}, seqKey(uint64(i+1)), m); err != nil {
				return err
			}
		}
		return put(tx, []string{"offline_receipts", "alice"}, seqKey(1), []byte(`{"by":"carol","id":"old-1"}`))
	})

	srv := signaltest.Start(t, signal.Config{DataDir: dir})
	if _, err := os.Stat(filepath.Join(dir, "signal.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("signal.db still in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "signal.db.migrated")); err != nil {
		t.Fatalf("no backup of the old store: %v", err)
	}
	if n, err := srv.OfflineWaiting("bob"); err != nil || n != 3 {
		t.Fatalf("waiting for bob: %d %v", n, err)
	}

	// Bob's name is still his: another key is refused.
	c, challenge := dial(t, srv.URL)
	c.send(proto.TypeAuth, "a", "", proto.SignAuth(newKey(), challenge, "bob"))
	c.expectError(proto.CodeNameTaken)

	// Others still see bob's keys and when he was last here.
	carol := login(t, srv.URL, "carol", nil)
	p := watch(t, carol, "bob")["bob"]
	if p.Status != proto.StatusOffline || p.LastSeen != seen || p.EncKey != bobEnc || p.EncSig != bobSig {
		t.Fatalf("bob's presence after the migration: %+v", p)
	}

	// Bob gets what waited, in order, from alice.
	b := login(t, srv.URL, "bob", bobKey)
	if got := sealedIDs(t, b, 3); fmt.Sprint(got) != "[m1 m2 m3]" {
		t.Fatalf("bob got %v", got)
	}
	// Alice gets the receipt that waited for her.
	a := login(t, srv.URL, "alice", aliceKey)
	env := a.readUntil(proto.TypeSealedReceipt)
	if r, _ := proto.DecodeBody[*proto.Receipt](env); r.ID != "old-1" || env.From != "carol" {
		t.Fatalf("receipt %s from %s", env.Body, env.From)
	}

	// A restart does not import anything again.
	srv.Close()
	srv2 := signaltest.Start(t, signal.Config{DataDir: dir})
	if n, _ := srv2.OfflineWaiting("bob"); n != 3 {
		t.Fatalf("after a restart %d waiting, want the same 3", n)
	}
}
