package signal_test

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// TestInvalidUTF8NeverForwarded: Chromium closes a WebSocket (1006) on a
// text frame holding invalid UTF-8, so a server that forwards bytes
// unchecked lets one message knock any browser user off. Every routed
// type with free text (chat text, ring/hangup/bye reasons) is refused with
// bad_request, nothing reaches the recipient, and both stay connected.
func TestInvalidUTF8NeverForwarded(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := login(t, srv.URL, "alice", nil)
	bob := login(t, srv.URL, "bob", nil)
	watch(t, alice, "bob") // each hears of the other: no presence comes in between below
	watch(t, bob, "alice")

	bad := "\xff\xfe"
	frames := map[string]string{
		"chat":   `{"v":1,"type":"chat","id":"u1","to":"bob","body":{"id":"u1","text":"hi ` + bad + `"}}`,
		"ring":   `{"v":1,"type":"ring","id":"u2","to":"bob","body":{"call":"c1","reason":"` + bad + `"}}`,
		"hangup": `{"v":1,"type":"hangup","id":"u3","to":"bob","body":{"call":"c1","reason":"bye ` + bad + `"}}`,
		"bye":    `{"v":1,"type":"bye","id":"u4","to":"bob","body":{"session":"s1","reason":"` + bad + `"}}`,
		"typing": `{"v":1,"type":"typing","id":"u5","to":"bob","body":{"typing":true,"x":"` + bad + `"}}`,
	}
	for name, raw := range frames {
		if utf8.ValidString(raw) {
			t.Fatalf("%s: test frame is valid UTF-8", name)
		}
		alice.sendRaw([]byte(raw))
		if e := alice.expectError(proto.CodeBadRequest); e.Ref == "" {
			t.Errorf("%s: error has no ref: %+v", name, e)
		}
	}
	// Nothing of it reached bob: the next frame he gets is a good message
	// sent after all of them, and he is still connected.
	alice.send(proto.TypeRead, "ok0", "bob", &proto.Receipt{ID: "ok0"})
	bob.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := bob.conn.ReadMessage()
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	env, err := proto.Decode(data)
	if err != nil || env.Type != proto.TypeRead || env.From != "alice" {
		t.Fatalf("bob's next frame is %q (%v), want alice's good frame", data, err)
	}
	alice.readUntil(proto.TypeAck)
	chatRoundTrip(t, alice, bob, "ok1")
	chatRoundTrip(t, bob, alice, "ok2")
}

// TestPlainChatNotCarried: chat through the server goes sealed to its
// recipient; a plain chat frame is refused and reaches no one, so the
// server never carries what people say in a form it can read.
func TestPlainChatNotCarried(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := login(t, srv.URL, "alice", nil)
	bob := login(t, srv.URL, "bob", nil)
	watch(t, alice, "bob")
	watch(t, bob, "alice")
	alice.send(proto.TypeChat, "p1", "bob", &proto.Chat{ID: "p1", Text: "readable by the server"})
	if e := alice.expectError(proto.CodeBadRequest); e.Ref != "p1" {
		t.Fatalf("error %+v", e)
	}
	alice.send(proto.TypeRead, "after", "bob", &proto.Receipt{ID: "after"})
	if env := bob.read(); env.Type != proto.TypeRead {
		t.Fatalf("bob's next frame is %s %s, want the read receipt sent after the chat", env.Type, env.Body)
	}
}

// TestDecodeRefusesInvalidUTF8 holds the rule at the decoder every client
// and the server share, for data-channel messages too.
func TestDecodeRefusesInvalidUTF8(t *testing.T) {
	if _, err := proto.Decode([]byte(`{"v":1,"type":"ping","id":"p","body":{"x":"` + "\xc3\x28" + `"}}`)); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Errorf("Decode: %v, want bad_request", err)
	}
	if _, err := proto.DecodeDC([]byte(`{"type":"typing","typing":true,"x":"` + "\xed\xa0\x80" + `"}`)); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Errorf("DecodeDC: %v, want bad_request", err)
	}
}
