package main

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

// TestTUIFiles: in the terminal, /send offers a file to the open
// conversation; a file offered to us shows on the banner until /accept
// (then a progress bar with bytes, rate and time left) or /decline.
func TestTUIFiles(t *testing.T) {
	needTmux(t)
	sig := startSignal(t, t.TempDir())
	dir := t.TempDir()
	_, bobKey, _ := ed25519.GenerateKey(nil)
	bob := startPeer(t, sig.url(), "bob", bobKey, func(c *client.Config) {
		c.Files = client.FileConfig{Dir: filepath.Join(dir, "bob-in"), MaxRate: 2e6} // 3 s for 6 MB: the bar shows
	})
	downloads := filepath.Join(dir, "alice-in")
	alice := startTUI(t, "chat", "--server", sig.url(), "--name", "alice", "--profile", filepath.Join(dir, "alice"),
		"--ice-loopback", "--audio-in", "silence", "--downloads", downloads)
	alice.waitScreen("connected", "● connected")
	alice.typeLine("/add bob")
	alice.waitScreen("bob online", "● bob", "online")
	ctx := context.Background()

	// alice -> bob with /send.
	src := filepath.Join(dir, "report.pdf")
	sum := writeRandom(t, src, 3<<20)
	alice.typeLine("/send " + src)
	off := bob.ev.Wait(t, tuiWait, "bob gets the offer", func(e client.Event) bool { _, ok := e.(client.FileOfferEvent); return ok }).(client.FileOfferEvent)
	if off.Name != "report.pdf" || off.Size != 3<<20 || off.SHA256 != sum {
		t.Fatalf("offer %+v", off)
	}
	alice.waitScreen("waiting for bob", "report.pdf → bob · waiting for bob to accept")
	if err := bob.AcceptFile(ctx, off.ID); err != nil {
		t.Fatal(err)
	}
	got := bob.ev.Wait(t, tuiWait, "bob has it", func(e client.Event) bool { d, ok := e.(client.FileDoneEvent); return ok && d.ID == off.ID }).(client.FileDoneEvent)
	if hashFile(t, got.File) != sum {
		t.Fatal("bob's copy differs")
	}
	alice.waitScreen("arrived", "report.pdf arrived at bob", "me: 📎 report.pdf (3.1 MB) ✓✓")

	// bob -> alice: the banner, /accept, the progress bar, the saved file.
	src2 := filepath.Join(dir, "holiday.jpg")
	sum2 := writeRandom(t, src2, 6e6)
	id, err := bob.SendFile(ctx, "alice", src2)
	if err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("offer banner", "bob offers holiday.jpg (6.0 MB, image/jpeg) — /accept or /decline")
	alice.saveScreen("file-offer")
	alice.typeLine("/accept")
	bar := regexp.MustCompile(`⇣ holiday\.jpg \[█+░*\] +\d+% [\d.]+ [kM]?B/6\.0 MB · [\d.]+ [kM]?B/s · \d+s left`)
	alice.waitScreenFunc("a progress bar", func(s string) bool { return bar.MatchString(s) })
	alice.saveScreen("file-progress")
	alice.waitScreen("saved", "holiday.jpg from bob saved as "+filepath.Join(downloads, "holiday")[:20])
	if h := hashFile(t, filepath.Join(downloads, "holiday.jpg")); h != sum2 {
		t.Fatalf("alice's copy SHA-256 %s, sent %s", h, sum2)
	}
	bob.ev.Wait(t, tuiWait, "bob hears it arrived", func(e client.Event) bool { d, ok := e.(client.FileDoneEvent); return ok && d.ID == id })

	// /decline refuses the next one.
	id3, err := bob.SendFile(ctx, "alice", src)
	if err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("second offer", "bob offers report.pdf")
	alice.typeLine("/decline")
	f := bob.ev.Wait(t, tuiWait, "bob hears the refusal", func(e client.Event) bool { x, ok := e.(client.FileFailedEvent); return ok && x.ID == id3 }).(client.FileFailedEvent)
	if f.Code != proto.CodeDeclined {
		t.Fatalf("refusal %+v", f)
	}
	alice.waitScreenFunc("banner gone", func(s string) bool { return !regexp.MustCompile(`bob offers`).MatchString(s) })
}
