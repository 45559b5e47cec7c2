package signal

import (
	"testing"

	"github.com/parley-voice/parley/proto"
)

// TestMailStores runs one script against both stores: order, duplicates,
// limits, expiry by age, removal and the receipt cap.
func TestMailStores(t *testing.T) {
	br, err := openBoltRegistry(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	stores := map[string]mailStore{"memory": newMemMail(), "bbolt": &boltMail{db: br.db}}
	for name, st := range stores {
		t.Run(name, func(t *testing.T) {
			lim := OfflineLimits{MaxMessages: 3, MaxReceipts: 2}
			lim.setDefaults()
			rec := func(id string, at int64) stored {
				return stored{From: "alice", Sealed: proto.Sealed{ID: id, Ciphertext: "AAAA", Stored: at}}
			}
			for i, id := range []string{"a", "b", "c"} {
				if dup, err := st.put("bob", rec(id, int64(100+i)), &lim, 0); dup || err != nil {
					t.Fatalf("put %s: dup=%v err=%v", id, dup, err)
				}
			}
			if dup, err := st.put("bob", rec("b", 200), &lim, 0); !dup || err != nil {
				t.Fatalf("duplicate b: dup=%v err=%v", dup, err)
			}
			if _, err := st.put("bob", rec("d", 200), &lim, 0); err != errMailboxFull {
				t.Fatalf("fourth message: %v, want full", err)
			}
			got, _ := st.list("bob", 0)
			if len(got) != 3 || got[0].Sealed.ID != "a" || got[2].Sealed.ID != "c" || got[0].Seq >= got[1].Seq {
				t.Fatalf("list %+v", got)
			}
			// a (stored at 100) is older than the cutoff 101: dropped.
			got, _ = st.list("bob", 101)
			if len(got) != 2 || got[0].Sealed.ID != "b" {
				t.Fatalf("after expiry %+v", got)
			}
			if dup, err := st.put("bob", rec("d", 200), &lim, 101); dup || err != nil {
				t.Fatalf("room after expiry: %v %v", dup, err)
			}
			if ok, _ := st.remove("bob", "mallory", "b"); ok {
				t.Fatal("removed another sender's message")
			}
			if ok, _ := st.remove("bob", "alice", "b"); !ok {
				t.Fatal("remove b failed")
			}
			got, _ = st.list("bob", 0)
			if len(got) != 2 || got[0].Sealed.ID != "c" || got[1].Sealed.ID != "d" {
				t.Fatalf("after remove %+v", got)
			}
			for _, id := range []string{"x", "y", "z"} {
				if err := st.putReceipt("alice", receiptRec{By: "bob", ID: id}, lim.MaxReceipts); err != nil {
					t.Fatal(err)
				}
			}
			rs, _ := st.receipts("alice")
			if len(rs) != 2 || rs[0].ID != "y" || rs[1].ID != "z" {
				t.Fatalf("receipts %+v", rs)
			}
			st.removeReceipt("alice", rs[0].Seq)
			if rs, _ = st.receipts("alice"); len(rs) != 1 || rs[0].ID != "z" {
				t.Fatalf("receipts after remove %+v", rs)
			}
		})
	}
}
