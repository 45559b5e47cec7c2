package sigdial_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

func TestURL(t *testing.T) {
	cases := map[string]string{
		"127.0.0.1:8080":          "ws://127.0.0.1:8080/ws",
		"http://127.0.0.1:8080":   "ws://127.0.0.1:8080/ws",
		"http://127.0.0.1:8080/":  "ws://127.0.0.1:8080/ws",
		"https://parley.example":  "wss://parley.example/ws",
		"ws://h:1/ws":             "ws://h:1/ws",
		"wss://h/custom/path":     "wss://h/custom/path",
		"http://h:8080/parley/ws": "ws://h:8080/parley/ws",
	}
	for in, want := range cases {
		if got := sigdial.URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSignIn(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	_, key, _ := ed25519.GenerateKey(nil)
	signIn := func(k ed25519.PrivateKey, name string) error {
		ws, w, err := sigdial.SignIn(context.Background(), sigdial.Options{
			URL: srv.HTTP, Agent: "test",
			Auth: func(ch string) *proto.Auth { return proto.SignAuth(k, ch, name) },
		})
		if err != nil {
			return err
		}
		defer ws.Close()
		if w.Name != name {
			t.Fatalf("welcome for %q, want %q", w.Name, name)
		}
		return nil
	}
	if err := signIn(key, "alice"); err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	err := signIn(other, "alice")
	if !errors.Is(err, proto.ErrNameTaken) {
		t.Fatalf("another key for alice: %v, want name_taken", err)
	}
	if _, _, err := sigdial.SignIn(context.Background(), sigdial.Options{URL: "127.0.0.1:1", Auth: nil}); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
}
