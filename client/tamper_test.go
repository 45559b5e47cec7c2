package client_test

import (
	"context"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// TestTamperingServer: a signaling server that rewrites the DTLS
// fingerprints of offers and answers (to sit in the middle of "direct"
// calls) and reads everything it carries. Both clients see the swap and
// refuse the link, loudly; the call never connects; chat still gets
// through, sealed, and no frame the server handled holds its text.
func TestTamperingServer(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	mitm := testutil.StartTamperer(t, srv.HTTP)
	alice := startClient(t, mitm.URL, "alice", nil, nil)
	bob := startClient(t, mitm.URL, "bob", nil, func(c *client.Config) { c.AutoAnswer = true })
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	bob.ev.Wait(t, wait, "bob sees alice", online("alice"))
	ctx := context.Background()
	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	security := func(with string) func(client.Event) bool {
		return func(e client.Event) bool {
			s, ok := e.(client.SecurityEvent)
			return ok && s.With == with && s.Code == proto.CodeInsecure
		}
	}
	bob.ev.Wait(t, wait, "bob refuses alice's tampered offer", security("alice"))
	ended := alice.ev.Wait(t, wait, "alice's call ends", callState("bob", client.CallEnded)).(client.CallEvent)
	if ended.Code != proto.EndInsecure {
		t.Errorf("alice's call ended with %q (%s), want insecure", ended.Code, ended.Reason)
	}
	if n := alice.ev.Count(callState("bob", client.CallConnected)) + bob.ev.Count(callState("alice", client.CallConnected)); n != 0 {
		t.Fatal("a call connected over a tampered link")
	}
	if mitm.Swapped() == 0 {
		t.Fatal("the tamperer rewrote nothing: the test proves nothing")
	}

	// Chat still flows, sealed: the server carried it and cannot read it.
	const secret = "the combination is 12-34-56"
	id, err := alice.Send(ctx, "bob", secret)
	if err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, wait, "bob gets it", message("alice", secret))
	alice.ev.Wait(t, wait, "delivered", delivered(id))
	if mitm.Saw(secret) || mitm.Saw("12-34-56") {
		t.Fatal("the server saw the chat text")
	}
	t.Logf("%d frames through the tamperer, %d offers/answers rewritten, all refused", mitm.Frames(), mitm.Swapped())
}
