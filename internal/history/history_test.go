package history

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

func openT(t *testing.T, path string) *DB {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestHistorySurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	d := openT(t, path)
	if isNew, err := d.SaveIncoming(client.MessageEvent{From: "bob", ID: "m1", Text: "hi", Time: 1}); !isNew || err != nil {
		t.Fatalf("save: %v %v", isNew, err)
	}
	if isNew, _ := d.SaveIncoming(client.MessageEvent{From: "bob", ID: "m1", Text: "hi"}); isNew {
		t.Fatal("duplicate stored as new")
	}
	if err := d.SaveOutgoing("bob", "o1", "hello", 2, Sending); err != nil {
		t.Fatal(err)
	}
	d.SetStatus("bob", "o1", Delivered)
	if ch, _ := d.SetStatus("bob", "o1", Stored); ch {
		t.Fatal("status moved backwards")
	}
	if _, err := d.SaveIncoming(client.MessageEvent{From: "Not A Name", ID: "x", Text: "x"}); err == nil {
		t.Fatal("bad sender name accepted")
	}
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	d.Close()

	d = openT(t, path)
	defer d.Close()
	msgs, err := d.Messages("bob", 10)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("messages %+v %v", msgs, err)
	}
	if msgs[0].Text != "hi" || msgs[0].Out || msgs[1].Text != "hello" || !msgs[1].Out || msgs[1].Status != Delivered {
		t.Fatalf("messages %+v", msgs)
	}
	if c, ok := d.Contact("bob"); !ok || c.Name != "bob" {
		t.Fatal("sender not added to contacts")
	}
	if n := d.Unread("bob"); n != 1 {
		t.Fatalf("unread %d", n)
	}
	ids, _ := d.MarkRead("bob")
	if len(ids) != 1 || ids[0] != "m1" || d.Unread("bob") != 0 {
		t.Fatalf("mark read %v, unread %d", ids, d.Unread("bob"))
	}
	if last, _ := d.Messages("bob", 1); len(last) != 1 || last[0].ID != "o1" {
		t.Fatalf("limit: %+v", last)
	}
	// As the client's outbox: a queued message is numbered and listed to
	// be sent again until it is finished; delivered ones are not.
	q := &client.OutMessage{ID: "o2", To: "bob", Text: "lost?", Time: 3}
	if err := d.Queue(q); err != nil || q.Seq != 1 {
		t.Fatalf("queue: seq %d, %v", q.Seq, err)
	}
	q2 := &client.OutMessage{ID: "o3", To: "bob", Text: "and this", Time: 4}
	d.Queue(q2)
	if q2.Seq != 2 || !d.WasSent("bob", "o2") || d.WasSent("bob", "m1") || d.WasSent("carol", "o2") {
		t.Fatalf("seq %d; WasSent wrong", q2.Seq)
	}
	unsent, err := d.Unsent()
	if err != nil || len(unsent) != 2 || unsent[0].ID != "o2" || unsent[0].To != "bob" || unsent[0].Text != "lost?" || unsent[0].Time != 3 || unsent[0].Seq != 1 {
		t.Fatalf("unsent: %+v %v", unsent, err)
	}
	d.Finish("bob", "o2", "")
	d.Finish("bob", "o3", proto.CodeNotAccepted)
	if unsent, _ := d.Unsent(); len(unsent) != 0 {
		t.Fatalf("finished messages still unsent: %+v", unsent)
	}
	if ms, _ := d.Messages("bob", 10); ms[len(ms)-1].Status != Failed || ms[len(ms)-1].Refused != proto.CodeNotAccepted || ms[len(ms)-2].Status != Delivered {
		t.Fatalf("after finish: %+v", ms[len(ms)-2:])
	}
	// Incoming order and shown marks.
	d.TrackShown()
	d.SaveIncoming(client.MessageEvent{From: "bob", ID: "m9", Text: "x", Seq: 7})
	if d.LastSeq("bob") != 7 || d.LastSeq("carol") != 0 {
		t.Fatalf("last seq %d", d.LastSeq("bob"))
	}
	if un, _ := d.Unshown(); len(un) != 1 || un[0].ID != "m9" {
		t.Fatalf("unshown: %+v", un)
	}
	d.MarkShown("bob", "m9")
	if un, _ := d.Unshown(); len(un) != 0 {
		t.Fatalf("unshown after mark: %+v", un)
	}
}

func key(t *testing.T) (string, ed25519.PublicKey) {
	pub, _, _ := ed25519.GenerateKey(nil)
	return base64.StdEncoding.EncodeToString(pub), pub
}

func TestTrustOnFirstUse(t *testing.T) {
	d := openT(t, filepath.Join(t.TempDir(), "h.db"))
	defer d.Close()
	k1, pub1 := key(t)
	k2, _ := key(t)
	if st, _ := d.ObserveKey("bob", k1); st != KeyUnknown {
		t.Fatalf("not a contact: %v", st)
	}
	d.AddContact("bob")
	steps := []struct {
		name string
		do   func() (KeyState, error)
		want KeyState
	}{
		{"first key pinned", func() (KeyState, error) { return d.ObserveKey("bob", k1) }, KeyPinned},
		{"same key", func() (KeyState, error) { return d.ObserveKey("bob", k1) }, KeySame},
		{"changed key", func() (KeyState, error) { return d.ObserveKey("bob", k2) }, KeyChanged},
		{"still changed", func() (KeyState, error) { return d.ObserveKey("bob", k2) }, KeyChanged},
	}
	for _, s := range steps {
		if st, err := s.do(); st != s.want || err != nil {
			t.Fatalf("%s: %v %v, want %v", s.name, st, err, s.want)
		}
	}
	if string(d.PinnedKey("bob")) != string(pub1) {
		t.Fatal("pinned key replaced without acceptance")
	}
	// A message while the key is changed is held (not shown, not unread).
	d.SaveIncoming(client.MessageEvent{From: "bob", ID: "h1", Text: "trust me"})
	if m, _ := d.Messages("bob", 1); !m[0].Held || d.Unread("bob") != 0 {
		t.Fatalf("not held: %+v", m)
	}
	if err := d.AcceptKey("bob"); err != nil {
		t.Fatal(err)
	}
	if c, _ := d.Contact("bob"); c.Key != k2 || c.KeyChanged() {
		t.Fatalf("after accept %+v", c)
	}
	if m, _ := d.Messages("bob", 1); m[0].Held || d.Unread("bob") != 1 {
		t.Fatalf("still held: %+v", m)
	}
	if err := d.AcceptKey("bob"); !errors.Is(err, ErrNoPendingKey) {
		t.Fatalf("accept twice: %v", err)
	}
}

func TestSafetyNumber(t *testing.T) {
	_, a := key(t)
	_, b := key(t)
	_, c := key(t)
	ab, ba := SafetyNumber("alice", a, "bob", b), SafetyNumber("bob", b, "alice", a)
	if ab != ba {
		t.Fatalf("sides differ:\n%s\n%s", ab, ba)
	}
	if g := strings.Fields(ab); len(g) != 12 || len(g[0]) != 5 {
		t.Fatalf("format %q", ab)
	}
	if SafetyNumber("alice", a, "bob", c) == ab {
		t.Fatal("another key gives the same number")
	}
}

// TestDisplayNames: a contact keeps the display name they last sent, kept
// across a restart, shown beside the handle; a message without one keeps
// the one known.
func TestDisplayNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	d := openT(t, path)
	for i, disp := range []string{"", "Bob Stone", "", "Bob S."} {
		if _, err := d.SaveIncoming(client.MessageEvent{From: "bob", ID: fmt.Sprint("m", i), Text: "hi", Display: disp}); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	d = openT(t, path)
	c, ok := d.Contact("bob")
	if !ok || c.Display != "Bob S." || c.Label() != "Bob S. (bob)" {
		t.Fatalf("contact %+v, label %q; want display \"Bob S.\", label \"Bob S. (bob)\"", c, c.Label())
	}
	if c := (Contact{Name: "carol"}); c.Label() != "carol" {
		t.Errorf("label without a display name %q", c.Label())
	}
}
