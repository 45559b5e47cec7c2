package client_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// receiving configures a client to take files into dir (state beside it).
func receiving(dir string, mod func(*client.FileConfig)) func(*client.Config) {
	return func(c *client.Config) {
		c.Files = client.FileConfig{Dir: filepath.Join(dir, "downloads"), StateDir: filepath.Join(dir, "state")}
		if mod != nil {
			mod(&c.Files)
		}
	}
}

// autoAccepting is receiving(dir) accepting every offer.
func autoAccepting(dir string) func(*client.Config) {
	return receiving(dir, func(f *client.FileConfig) {
		f.AutoAccept = func(string, proto.FileInfo) bool { return true }
	})
}

// autoAcceptPair starts a server, alice, and bob accepting every offer
// into dir, and waits until alice sees bob.
func autoAcceptPair(t *testing.T) (alice, bob *peer, dir string) {
	srv := signaltest.Start(t, signal.Config{})
	dir = t.TempDir()
	alice = startClient(t, srv.URL, "alice", nil, nil)
	bob = startClient(t, srv.URL, "bob", nil, autoAccepting(dir))
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	return alice, bob, dir
}

func fileOffer(id string) func(client.Event) bool {
	return func(e client.Event) bool {
		o, ok := e.(client.FileOfferEvent)
		return ok && o.ID == id
	}
}

// fileEnd matches the FileDoneEvent or FileFailedEvent of transfer id.
func fileEnd(id string) func(client.Event) bool {
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

func mustDone(t *testing.T, who string, e client.Event) client.FileDoneEvent {
	t.Helper()
	d, ok := e.(client.FileDoneEvent)
	if !ok {
		t.Fatalf("%s: transfer ended %+v, want done", who, e)
	}
	return d
}

func mustFail(t *testing.T, who string, e client.Event, code proto.Code) client.FileFailedEvent {
	t.Helper()
	f, ok := e.(client.FileFailedEvent)
	if !ok || f.Code != code {
		t.Fatalf("%s: transfer ended %+v, want failed with %s", who, e, code)
	}
	return f
}

// noPartFiles fails if dir holds a temporary transfer file.
func noPartFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}

// TestFileTransferDirect: alice offers a file, bob sees name, size and
// type, accepts, and gets the same bytes under the offered name, with
// progress on both sides, over the direct path.
func TestFileTransferDirect(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	dir := t.TempDir()
	alice := startClient(t, srv.URL, "alice", nil, nil)
	bob := startClient(t, srv.URL, "bob", nil, receiving(dir, nil))
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	src, sum := testutil.RandomFile(t, t.TempDir(), "Ferien — Strand.jpg", 24<<20+12345)
	ctx := context.Background()
	id, err := alice.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	offer := bob.ev.Wait(t, wait, "bob gets the offer", fileOffer(id)).(client.FileOfferEvent)
	if offer.From != "alice" || offer.Name != "Ferien — Strand.jpg" || offer.Size != 24<<20+12345 || offer.Type != "image/jpeg" || offer.SHA256 != sum || offer.Auto {
		t.Fatalf("offer %+v", offer)
	}
	msg := bob.ev.Wait(t, wait, "the offer shows in the conversation", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.ID == id
	}).(client.MessageEvent)
	if msg.File == nil || !strings.Contains(msg.Text, "Ferien — Strand.jpg") {
		t.Errorf("offer message %+v", msg)
	}
	if err := bob.AcceptFile(ctx, id); err != nil {
		t.Fatal(err)
	}
	got := mustDone(t, "bob", bob.ev.Wait(t, 60*time.Second, "bob has the file", fileEnd(id)))
	sent := mustDone(t, "alice", alice.ev.Wait(t, wait, "alice hears it arrived", fileEnd(id)))
	if want := filepath.Join(dir, "downloads", "Ferien — Strand.jpg"); got.File != want {
		t.Errorf("saved as %q, want %q", got.File, want)
	}
	if h := testutil.FileSHA256(t, got.File); h != sum {
		t.Fatalf("received SHA-256 %s, sent %s", h, sum)
	}
	if sent.Sent != offer.Size || sent.Resumed != 0 || sent.File != src {
		t.Errorf("sender's done %+v: want exactly %d bytes sent once", sent, offer.Size)
	}
	noPartFiles(t, filepath.Join(dir, "downloads"))
	for _, p := range []*peer{alice, bob} {
		ev := p.ev.Wait(t, wait, "progress", func(e client.Event) bool {
			x, ok := e.(client.FileProgressEvent)
			return ok && x.ID == id
		}).(client.FileProgressEvent)
		if ev.Path != "direct" || ev.Size != offer.Size {
			t.Errorf("progress %+v, want on the direct path", ev)
		}
	}
	// A second file of the same name is kept beside the first.
	id2, err := alice.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, wait, "second offer", fileOffer(id2))
	if err := bob.AcceptFile(ctx, id2); err != nil {
		t.Fatal(err)
	}
	got2 := mustDone(t, "bob", bob.ev.Wait(t, 60*time.Second, "second file", fileEnd(id2)))
	if want := filepath.Join(dir, "downloads", "Ferien — Strand (1).jpg"); got2.File != want {
		t.Errorf("second copy saved as %q, want %q", got2.File, want)
	}
	list, err := bob.Transfers(ctx)
	if err != nil || len(list) != 2 || list[0].State != client.FileDone || list[0].Bytes != offer.Size {
		t.Errorf("bob's transfers %+v (%v)", list, err)
	}
}

// TestFileDeclined: bob refuses; alice hears "declined" and nothing is
// written on bob's side.
func TestFileDeclined(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	dir := t.TempDir()
	alice := startClient(t, srv.URL, "alice", nil, nil)
	bob := startClient(t, srv.URL, "bob", nil, receiving(dir, nil))
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	src, _ := testutil.RandomFile(t, t.TempDir(), "notes.txt", 1000)
	ctx := context.Background()
	id, err := alice.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, wait, "offer", fileOffer(id))
	if err := bob.DeclineFile(ctx, id, "not now"); err != nil {
		t.Fatal(err)
	}
	f := mustFail(t, "alice", alice.ev.Wait(t, wait, "alice hears the refusal", fileEnd(id)), proto.CodeDeclined)
	if f.Reason != "not now" || f.Direction != "send" {
		t.Errorf("alice's failure %+v", f)
	}
	mustFail(t, "bob", bob.ev.Wait(t, wait, "bob's own refusal", fileEnd(id)), proto.CodeDeclined)
	if err := bob.AcceptFile(ctx, id); err == nil {
		t.Error("a declined offer could be accepted")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "downloads"))
	if len(ents) != 0 {
		t.Errorf("download folder has %d entries after a refusal", len(ents))
	}
}

// TestFileOverLimit: an offer over the receiver's size limit is refused
// by the receiving client itself, with too_large, before any byte moves.
func TestFileOverLimit(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	dir := t.TempDir()
	alice := startClient(t, srv.URL, "alice", nil, nil)
	bob := startClient(t, srv.URL, "bob", nil, receiving(dir, func(f *client.FileConfig) {
		f.MaxSize = 1 << 20
		f.AutoAccept = func(string, proto.FileInfo) bool { return true }
	}))
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	src, _ := testutil.RandomFile(t, t.TempDir(), "big.bin", 1<<20+1)
	id, err := alice.SendFile(context.Background(), "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	f := mustFail(t, "alice", alice.ev.Wait(t, wait, "alice hears too large", fileEnd(id)), proto.CodeTooLarge)
	if !strings.Contains(f.Reason, "limit") {
		t.Errorf("reason %q", f.Reason)
	}
	mustFail(t, "bob", bob.ev.Wait(t, wait, "bob refused it", fileEnd(id)), proto.CodeTooLarge)
	ents, _ := os.ReadDir(filepath.Join(dir, "downloads"))
	if len(ents) != 0 {
		t.Errorf("download folder has %d entries", len(ents))
	}
}

// TestFileUnsafeName: a file offered as "../../x" or with path separators
// is saved under a plain name inside the download folder, never beside or
// above it.
func TestFileUnsafeName(t *testing.T) {
	alice, bob, dir := autoAcceptPair(t)
	src, sum := testutil.RandomFile(t, t.TempDir(), "payload", 3000)
	downloads := filepath.Join(dir, "downloads")
	for _, tc := range []struct{ offered, saved string }{
		{"../../evil.sh", "_.._evil.sh"},
		{"../state/x.json", "_state_x.json"},
		{`sub\dir/file.txt`, "sub_dir_file.txt"},
		{"/etc/passwd", "_etc_passwd"},
		{"..", "file"},
		{".profile", "profile"},
	} {
		id, err := alice.SendFileNamed(context.Background(), "bob", src, tc.offered)
		if err != nil {
			t.Fatal(err)
		}
		off := bob.ev.Wait(t, wait, "offer", fileOffer(id)).(client.FileOfferEvent)
		if off.Name != tc.offered || !off.Auto {
			t.Errorf("offer shows %q (auto %v), want the name as offered", off.Name, off.Auto)
		}
		d := mustDone(t, "bob", bob.ev.Wait(t, wait, "saved", fileEnd(id)))
		if d.File != filepath.Join(downloads, tc.saved) {
			t.Errorf("%q saved as %q, want %q inside the download folder", tc.offered, d.File, tc.saved)
		}
		if testutil.FileSHA256(t, d.File) != sum {
			t.Errorf("%q: content differs", tc.offered)
		}
	}
	// A caller's own transfer id names the transfer on both sides; one in
	// use, or one that is not an id, is refused.
	ctx := context.Background()
	id, err := alice.SendFileID(ctx, "bob", src, "mine.bin", "script-1")
	if err != nil || id != "script-1" {
		t.Fatalf("SendFileID: %q, %v", id, err)
	}
	mustDone(t, "bob", bob.ev.Wait(t, wait, "saved under the caller's id", fileEnd("script-1")))
	if _, err := alice.SendFileID(ctx, "bob", src, "again.bin", "script-1"); err == nil {
		t.Error("a second transfer under id script-1 was accepted")
	}
	if _, err := alice.SendFileID(ctx, "bob", src, "bad.bin", "no spaces"); err == nil {
		t.Error("transfer id \"no spaces\" was accepted")
	}
	for _, p := range []string{filepath.Join(dir, "evil.sh"), filepath.Join(filepath.Dir(dir), "evil.sh"), filepath.Join(dir, "state", "x.json")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was written outside the download folder", p)
		}
	}
}

// TestFileChangedAfterOffer: the sender's file changes after the offer;
// the receiver's hash check refuses the bytes and keeps nothing.
func TestFileChangedAfterOffer(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	dir := t.TempDir()
	alice := startClient(t, srv.URL, "alice", nil, nil)
	bob := startClient(t, srv.URL, "bob", nil, receiving(dir, nil))
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	src, _ := testutil.RandomFile(t, t.TempDir(), "doc.pdf", 200<<10)
	ctx := context.Background()
	id, err := alice.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, wait, "offer", fileOffer(id))
	testutil.RandomFile(t, filepath.Dir(src), "doc.pdf", 200<<10) // same size, other bytes
	if err := bob.AcceptFile(ctx, id); err != nil {
		t.Fatal(err)
	}
	mustFail(t, "bob", bob.ev.Wait(t, wait, "bob refuses the bytes", fileEnd(id)), proto.CodeHashMismatch)
	mustFail(t, "alice", alice.ev.Wait(t, wait, "alice hears", fileEnd(id)), proto.CodeHashMismatch)
	ents, _ := os.ReadDir(filepath.Join(dir, "downloads"))
	if len(ents) != 0 {
		t.Errorf("download folder has %d entries after a hash mismatch", len(ents))
	}
}

// TestFileOfferToOfflinePeer: bob is offline; the offer waits on the
// server sealed like an offline message (the file does not), and the
// bytes flow when bob is back and accepts.
func TestFileOfferToOfflinePeer(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	dir := t.TempDir()
	_, bobKey, _ := ed25519.GenerateKey(nil)
	alice := startClient(t, srv.URL, "alice", nil, nil)
	bob := startClient(t, srv.URL, "bob", bobKey, receiving(dir, nil))
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	bob.stop()
	alice.ev.Wait(t, wait, "bob leaves", offline("bob"))
	src, sum := testutil.RandomFile(t, t.TempDir(), "song.ogg", 3<<20)
	ctx := context.Background()
	id, err := alice.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	alice.ev.Wait(t, wait, "the offer is left sealed with the server", func(e client.Event) bool {
		s, ok := e.(client.StoredEvent)
		return ok && s.ID == id
	})
	bob2 := startClient(t, srv.URL, "bob", bobKey, receiving(dir, nil))
	off := bob2.ev.Wait(t, wait, "bob gets the sealed offer", fileOffer(id)).(client.FileOfferEvent)
	if off.SHA256 != sum {
		t.Fatalf("offer %+v", off)
	}
	m := bob2.ev.Wait(t, wait, "as a message", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.ID == id
	}).(client.MessageEvent)
	if m.Path != "server" {
		t.Errorf("offer came by %q, want server (sealed)", m.Path)
	}
	if err := bob2.AcceptFile(ctx, id); err != nil {
		t.Fatal(err)
	}
	d := mustDone(t, "bob", bob2.ev.Wait(t, wait, "bob has it", fileEnd(id)))
	if testutil.FileSHA256(t, d.File) != sum {
		t.Fatal("content differs")
	}
	mustDone(t, "alice", alice.ev.Wait(t, wait, "alice hears", fileEnd(id)))
}

// TestFileResumesAfterRestarts: the receiver, then the sender, stop in
// the middle of a transfer and start again from their state folders; the
// transfer continues from where the receiver's synced bytes end, not from
// zero, and the file arrives whole.
func TestFileResumesAfterRestarts(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	bobDir, aliceDir := t.TempDir(), t.TempDir()
	_, aliceKey, _ := ed25519.GenerateKey(nil)
	_, bobKey, _ := ed25519.GenerateKey(nil)
	const size = 12 << 20
	slow := func(c *client.Config) {
		c.Files.StateDir = filepath.Join(aliceDir, "state")
		c.Files.MaxRate = 3 << 20 // 4 s for the file: time to stop things in the middle
	}
	alice := startClient(t, srv.URL, "alice", aliceKey, slow)
	bobCfg := autoAccepting(bobDir)
	bob := startClient(t, srv.URL, "bob", bobKey, bobCfg)
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	src, sum := testutil.RandomFile(t, t.TempDir(), "video.mp4", size)
	id, err := alice.SendFile(context.Background(), "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	atLeast := func(p *peer, since int, n int64) func() {
		return func() {
			p.ev.WaitSince(t, since, wait, "progress", func(e client.Event) bool {
				x, ok := e.(client.FileProgressEvent)
				return ok && x.ID == id && x.Bytes >= n
			})
		}
	}
	atLeast(bob, 0, size/4)()
	bob.stop() // the receiver goes away a quarter in
	bob = startClient(t, srv.URL, "bob", bobKey, bobCfg)
	atLeast(bob, 0, size/2)()
	alice.stop() // then the sender, halfway
	alice = startClient(t, srv.URL, "alice", aliceKey, slow)
	d := mustDone(t, "alice", alice.ev.Wait(t, 60*time.Second, "alice hears it arrived", fileEnd(id)))
	t.Logf("restarted sender sent %d of %d bytes (%d resumed attempts)", d.Sent, size, d.Resumed)
	got := mustDone(t, "bob", bob.ev.Wait(t, wait, "bob has it", fileEnd(id)))
	if testutil.FileSHA256(t, got.File) != sum {
		t.Fatal("received file differs from the sent one")
	}
	// The restarted sender sent only what was missing: far less than the
	// whole file, starting past byte 0.
	if d.Resumed < 1 || d.Sent <= 0 || d.Sent > size*3/5 {
		t.Errorf("restarted sender: %+v; want a resumed attempt sending at most 3/5 of %d bytes", d, size)
	}
	noPartFiles(t, filepath.Join(bobDir, "downloads"))
}

// TestChatDuringFileTransfer: while a file goes at full speed over the
// link (the sender keeping megabytes buffered), chat messages both ways
// still go over the same link's data channel and arrive while the file is
// in flight, not queued behind it.
func TestChatDuringFileTransfer(t *testing.T) {
	alice, bob, dir := autoAcceptPair(t)
	const size = 96 << 20
	src, _ := testutil.RandomFile(t, t.TempDir(), "big.bin", size)
	ctx := context.Background()
	id, err := alice.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	received := func() int64 {
		list, _ := bob.Transfers(ctx)
		for _, x := range list {
			if x.ID == id {
				return x.Bytes
			}
		}
		return 0
	}
	testutil.Eventually(t, wait, "bytes flow", func() bool { return received() > 0 })
	for i := 0; i < 5; i++ {
		for _, dir := range []struct {
			from, to *peer
			name     string
		}{{alice, bob, "bob"}, {bob, alice, "alice"}} {
			text := fmt.Sprintf("ping %d to %s", i, dir.name)
			mark := dir.to.ev.Len()
			if _, err := dir.from.Send(ctx, dir.name, text); err != nil {
				t.Fatal(err)
			}
			m := dir.to.ev.WaitSince(t, mark, wait, text, func(e client.Event) bool {
				m, ok := e.(client.MessageEvent)
				return ok && m.Text == text
			}).(client.MessageEvent)
			if m.Path != "direct" {
				t.Errorf("%q went by %s, want the link's data channel", text, m.Path)
			}
		}
	}
	got := received()
	if n := bob.ev.Count(fileEnd(id)); n != 0 || got >= size {
		t.Fatalf("the file ended (%d of %d bytes) before the chat did: the chat waited behind it", got, size)
	}
	t.Logf("10 messages went both ways while the file was at %d of %d bytes", got, size)
	if err := alice.CancelFile(ctx, id); err != nil {
		t.Fatal(err)
	}
	mustFail(t, "bob", bob.ev.Wait(t, wait, "bob hears the cancel", fileEnd(id)), proto.CodeCancelled)
	noPartFiles(t, filepath.Join(dir, "downloads"))
}
