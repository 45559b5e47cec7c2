package supernode_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/webrtc/v4"
)

// Relayed file transfer: the supernode carries the file's DTLS records
// and never its bytes; a transfer stays under the relay's per-session
// budget so a call on the same relay keeps its packets; and a transfer
// whose supernode stops goes on through another.

// randomFile writes size random bytes and returns the path, the bytes and
// their SHA-256.
func randomFile(t *testing.T, size int) (string, []byte, string) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "photo.jpg")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return p, b, hex.EncodeToString(s[:])
}

func takesFiles(t *testing.T, then func(*client.Config)) func(*client.Config) {
	dir := t.TempDir()
	return func(c *client.Config) {
		c.Files = client.FileConfig{Dir: filepath.Join(dir, "in"), StateDir: filepath.Join(dir, "state"),
			AutoAccept: func(string, proto.FileInfo) bool { return true }}
		if then != nil {
			then(c)
		}
	}
}

func fileEnded(id string) func(client.Event) bool {
	return func(e client.Event) bool {
		switch x := e.(type) {
		case client.FileDoneEvent:
			return x.ID == id
		case client.FileFailedEvent:
			return x.ID == id
		}
		return false
	}
}

func sendFileWait(t *testing.T, from, to *peer, toName, path, sum string, d time.Duration) (client.FileDoneEvent, client.FileDoneEvent) {
	t.Helper()
	id, err := from.SendFile(context.Background(), toName, path)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := to.ev.Wait(t, d, "the file arrives", fileEnded(id)).(client.FileDoneEvent)
	if !ok {
		t.Fatalf("receiver: %+v", to.ev.Wait(t, d, "end", fileEnded(id)))
	}
	sent, ok := from.ev.Wait(t, 10*time.Second, "the sender hears", fileEnded(id)).(client.FileDoneEvent)
	if !ok {
		t.Fatalf("sender: %+v", from.ev.Wait(t, d, "end", fileEnded(id)))
	}
	if h := testutil.FileSHA256(t, got.File); h != sum {
		t.Fatalf("received SHA-256 %s, sent %s", h, sum)
	}
	return got, sent
}

func online(name string) func(client.Event) bool {
	return func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == name && p.Online()
	}
}

// TestRelayedFileIsBlind: two clients that only meet through the
// supernode send a file through it; what the supernode forwards holds no
// piece of the file.
func TestRelayedFileIsBlind(t *testing.T) {
	sig := loopbackSignal(t, nil)
	var tp tap
	sn := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snfiles", AllowPeers: supernodetest.Loopback, PacketListener: &tp,
		MaxSessionKbps: 400_000, MaxRelayMbps: 1000})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	alice := startPeer(t, sig.URL, "alice", nil)
	bob := startPeer(t, sig.URL, "bob", takesFiles(t, nil))
	alice.ev.Wait(t, 10*time.Second, "bob online", online("bob"))
	const size = 3 << 20
	path, content, sum := randomFile(t, size)
	got, _ := sendFileWait(t, alice, bob, "bob", path, sum, 60*time.Second)
	prog := bob.ev.Wait(t, time.Second, "progress", func(e client.Event) bool {
		p, ok := e.(client.FileProgressEvent)
		return ok && p.ID == got.ID
	}).(client.FileProgressEvent)
	if prog.Path != "relay" || prog.Via != "snfiles" {
		t.Errorf("progress %+v, want relay via snfiles", prog)
	}
	if st := sn.Stats(); st.BytesRelayed < size {
		t.Fatalf("supernode relayed %d bytes of a %d-byte file", st.BytesRelayed, size)
	}
	// Any 32 bytes of the file, anywhere in what the supernode forwarded,
	// would be plaintext.
	pkts := tp.all()
	for off := 0; off+32 <= size; off += size / 97 {
		needle := content[off : off+32]
		for _, p := range pkts {
			if bytes.Contains(p, needle) {
				t.Fatalf("the supernode forwarded the file's bytes %d–%d in the clear", off, off+32)
			}
		}
	}
	t.Logf("%d packets through the supernode, none holding the file's bytes", len(pkts))
}

// TestFileBesideRelayedCall: a file goes to bob while alice and bob talk
// through the same supernode, whose per-session budget would drop packets
// if the two together went over it. The transfer keeps under the budget
// (the clients learn it from the supernode list), so the relay drops
// nothing and the call loses no packets.
func TestFileBesideRelayedCall(t *testing.T) {
	sig := loopbackSignal(t, nil)
	const kbps = 3000
	sn := supernodetest.Start(t, sig.URL, supernode.Config{Name: "sncall", AllowPeers: supernodetest.Loopback, MaxSessionKbps: kbps})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	alice := startPeer(t, sig.URL, "alice", nil)
	bob := startPeer(t, sig.URL, "bob", takesFiles(t, nil))
	alice.ev.Wait(t, 10*time.Second, "bob online", online("bob"))
	conn := placeCall(t, alice, bob, "bob", "alice")
	if conn.Path != "relay" {
		t.Fatalf("call %+v, want relayed", conn)
	}
	before := lastStats(alice, "bob")
	beforeBob := lastStats(bob, "alice")
	drops := sn.Stats().SessionDrops
	const size = 1 << 20 // ~6 s at the call-time share of 3 Mbit/s
	path, _, sum := randomFile(t, size)
	start := time.Now()
	got, _ := sendFileWait(t, alice, bob, "bob", path, sum, 60*time.Second)
	took := time.Since(start)
	// A second of stats after the file, so every packet sent during it
	// has been counted (or counted lost).
	waitFor(t, 5*time.Second, "stats after the transfer", func() bool {
		return lastStats(alice, "bob").RTPPacketsReceived > before.RTPPacketsReceived+100
	})
	after, afterBob := lastStats(alice, "bob"), lastStats(bob, "alice")
	recv := float64(after.RTPPacketsReceived-before.RTPPacketsReceived) + float64(afterBob.RTPPacketsReceived-beforeBob.RTPPacketsReceived)
	lost := float64(after.PacketsLost-before.PacketsLost) + float64(afterBob.PacketsLost-beforeBob.PacketsLost)
	loss := 100 * lost / (recv + lost)
	rate := float64(size) / took.Seconds()
	t.Logf("1 MiB beside a relayed call in %v (%.0f kB/s under a %d kbit/s session budget): call loss %.2f%% (%v lost of %v), relay drops %d",
		took.Round(time.Millisecond), rate/1000, kbps, loss, lost, recv+lost, sn.Stats().SessionDrops-drops)
	if loss >= 1 {
		t.Errorf("the call lost %.2f%% of its packets while the file went through the same relay", loss)
	}
	if d := sn.Stats().SessionDrops - drops; d != 0 {
		t.Errorf("the relay dropped %d packets over the session budget during the transfer", d)
	}
	if rate*8/1000 > kbps {
		t.Errorf("the transfer ran at %.0f kbit/s, over the %d kbit/s budget", rate*8/1000, kbps)
	}
	_ = got
}

// lastStats is p's latest call stats with peer.
func lastStats(p *peer, with string) client.StatsEvent {
	var s client.StatsEvent
	for _, e := range p.ev.All() {
		if x, ok := e.(client.StatsEvent); ok && x.With == with {
			s = x
		}
	}
	return s
}

// TestFileSurvivesSupernodeLoss: the supernode carrying a transfer stops
// in the middle; the link moves to the other supernode (ICE restart) and
// the file arrives whole.
func TestFileSurvivesSupernodeLoss(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sns := map[string]*supernodetest.Supernode{}
	for name, ip := range map[string]string{"sna": "127.0.0.2", "snb": "127.0.0.3"} {
		a := ip + ":0"
		sns[name] = supernodetest.Start(t, sig.URL, supernode.Config{Name: name, AllowPeers: supernodetest.Loopback,
			ListenQUIC: a, ListenTURNUDP: a, ListenTURNTCP: a, ListenTURNTLS: a, MaxSessionKbps: 400_000, MaxRelayMbps: 1000})
		sns[name].WaitState(t, proto.SupernodePromoted, 10*time.Second)
	}
	fast := func(c *client.Config) {
		c.Relay.AlwaysWarm = true
		c.Files.MaxRate = 2 << 20 // 4 s for the file
		c.SettingEngine = func(se *webrtc.SettingEngine) {
			client.LoopbackOnly(se)
			se.SetICETimeouts(time.Second, 3*time.Second, 200*time.Millisecond)
		}
	}
	alice := startPeer(t, sig.URL, "alice", fast)
	bob := startPeer(t, sig.URL, "bob", takesFiles(t, fast))
	alice.ev.Wait(t, 10*time.Second, "bob online", online("bob"))
	const size = 8 << 20
	path, _, sum := randomFile(t, size)
	id, err := alice.SendFile(context.Background(), "bob", path)
	if err != nil {
		t.Fatal(err)
	}
	p := bob.ev.Wait(t, 20*time.Second, "a quarter of the file", func(e client.Event) bool {
		x, ok := e.(client.FileProgressEvent)
		return ok && x.ID == id && x.Bytes >= size/4
	}).(client.FileProgressEvent)
	if p.Path != "relay" || sns[p.Via] == nil {
		t.Fatalf("progress %+v, want relayed via sna or snb", p)
	}
	sns[p.Via].Stop()
	got, ok := bob.ev.Wait(t, 60*time.Second, "the file arrives", fileEnded(id)).(client.FileDoneEvent)
	if !ok {
		t.Fatal("the transfer failed after the supernode stopped")
	}
	if h := testutil.FileSHA256(t, got.File); h != sum {
		t.Fatalf("received SHA-256 %s, sent %s", h, sum)
	}
	sent := alice.ev.Wait(t, 10*time.Second, "alice hears", fileEnded(id)).(client.FileDoneEvent)
	last := bob.ev.Wait(t, time.Second, "progress after the loss", func(e client.Event) bool {
		x, ok := e.(client.FileProgressEvent)
		return ok && x.ID == id && x.Path == "relay" && x.Via != p.Via && x.Via != ""
	}).(client.FileProgressEvent)
	t.Logf("transfer moved from %s to %s; %d bytes sent for %d (%d resumed attempts)", p.Via, last.Via, sent.Sent, size, sent.Resumed)
	if sent.Sent > size*3/2 {
		t.Errorf("sent %d bytes for a %d-byte file: the transfer started over", sent.Sent, size)
	}
}
