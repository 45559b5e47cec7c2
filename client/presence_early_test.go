package client_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// TestPresenceBeforeSignIn: before the first sign-in the client knows
// nobody, and says so with an error instead of an empty list (a script's
// first {"cmd":"who"} answered "nobody is online"); once signed in it
// lists who is there.
func TestPresenceBeforeSignIn(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there: the client cannot sign in
	early := startClient(t, nowhere, "alice", nil, nil)
	ps, err := early.Presence(ctx)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeUnauthenticated {
		t.Fatalf("Presence before any sign-in: %v, %v; want an %s error", ps, err, proto.CodeUnauthenticated)
	}

	srv := signaltest.Start(t, signal.Config{})
	bob := startClient(t, srv.URL, "bob", nil, nil)
	bob.ev.Wait(t, wait, "bob signed in", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	carol := startClient(t, srv.URL, "carol", nil, nil)
	carol.ev.Wait(t, wait, "carol sees bob", online("bob"))
	ps, err = carol.Presence(ctx)
	if err != nil || len(ps) != 1 || ps[0].Name != "bob" {
		t.Fatalf("Presence once signed in: %v, %v; want bob", ps, err)
	}
}
