package signal

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/parley-voice/parley/proto"
)

// TestRegistries runs one script against both registries: first key wins,
// the encryption key is kept per name, replaced by a newer one from the
// same identity, kept when a sign-in brings none, and never touched by
// another key's attempt; bbolt keeps it across a reopen.
func TestRegistries(t *testing.T) {
	dir := t.TempDir()
	br, err := openBoltRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	bind := func(b byte) encBinding {
		k := make([]byte, proto.EncKeySize)
		k[0] = b
		key, sig := proto.SignEncKey(priv, "alice", k)
		return encBinding{Key: key, Sig: sig}
	}
	e1, e2 := bind(1), bind(2)
	regs := []struct {
		name string
		reg  registry
	}{{"memory", newMemRegistry()}, {"bbolt", br}}
	for _, r := range regs {
		t.Run(r.name, func(t *testing.T) {
			reg := r.reg
			lookup := func(want encBinding) {
				t.Helper()
				e, ok, err := reg.Lookup("alice")
				if err != nil || !ok || !pub.Equal(e.Key) || e.Enc != want {
					t.Fatalf("lookup: %+v %v %v, want enc %+v", e, ok, err, want)
				}
			}
			if _, ok, err := reg.Lookup("alice"); ok || err != nil {
				t.Fatalf("unregistered name found: %v %v", ok, err)
			}
			if err := reg.Bind("alice", pub, encBinding{}); err != nil {
				t.Fatal(err)
			}
			lookup(encBinding{})
			if err := reg.Bind("alice", pub, e1); err != nil {
				t.Fatal(err)
			}
			lookup(e1)
			if err := reg.Bind("alice", pub, e2); err != nil {
				t.Fatal(err)
			}
			lookup(e2)
			if err := reg.Bind("alice", pub, encBinding{}); err != nil {
				t.Fatal(err)
			}
			lookup(e2)
			if err := reg.Bind("alice", otherPub, e1); !errors.Is(err, ErrNameTaken) {
				t.Fatalf("other key: %v", err)
			}
			lookup(e2)
		})
	}
	if err := br.Bind("bob", pub, encBinding{Key: "short", Sig: e1.Sig}); err == nil {
		t.Fatal("malformed encryption key stored")
	}
	br.Close()
	br, err = openBoltRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	if e, ok, err := br.Lookup("alice"); err != nil || !ok || e.Enc != e2 {
		t.Fatalf("after reopen: %+v %v %v", e, ok, err)
	}
}
