package web_test

import (
	"context"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
)

// TestTamperingServerPage: the call page and a Go client behind a
// signaling server that rewrites the DTLS fingerprints of every offer and
// answer and keeps a copy of all it carries. Each side refuses the other's
// tampered offer and says so (the page in a banner that stays), no call
// connects, and chat still goes both ways sealed: no frame the server
// handled holds its text.
func TestTamperingServerPage(t *testing.T) {
	srv := startServer(t)
	mitm := testutil.StartTamperer(t, srv.HTTP)
	gopher := startGoClient(t, mitm.URL, "gopher")
	p := openPage(t, mitm.HTTP+"/", "alice")
	p.join("alice")
	gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"))
	p.waitFor("gopher listed", visible("contact-gopher"))
	p.click("contact-gopher")

	// The page calls: the Go client refuses the tampered offer.
	mark := gopher.ev.Len()
	p.click("call")
	gopher.ev.WaitSince(t, mark, wait, "gopher refuses the page's tampered offer", func(e client.Event) bool {
		s, ok := e.(client.SecurityEvent)
		return ok && s.With == "alice" && s.Code == proto.CodeInsecure
	})
	p.waitFor("page's call ends as tampered", textHas("call-state", "tampered with on the way"))

	// The Go client offers: the page refuses it, loudly.
	ctx := context.Background()
	if err := gopher.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("page warns", `document.getElementById("errors").textContent.includes("Security: the offer from gopher is not signed by gopher's key")`)
	gopher.ev.WaitSince(t, mark, wait, "gopher's call ends", isCall("alice", client.CallEnded))
	if n := gopher.ev.Count(isCall("alice", client.CallConnected)); n != 0 {
		t.Fatal("a call connected over a tampered link")
	}

	// Chat both ways, sealed through the server.
	p.send("browser secret 8d7f")
	gopher.ev.Wait(t, wait, "gopher gets the page's message", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == "alice" && m.Text == "browser secret 8d7f" && m.Path == "server"
	})
	if _, err := gopher.Send(ctx, "alice", "go secret 3c2b"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("page shows Go's message", message("in", "go secret 3c2b", ""))
	for _, s := range []string{"browser secret", "8d7f", "go secret", "3c2b"} {
		if mitm.Saw(s) {
			t.Errorf("the server saw %q", s)
		}
	}
	if mitm.Swapped() < 2 {
		t.Fatalf("the tamperer rewrote %d offers/answers, want both sides'", mitm.Swapped())
	}
}
