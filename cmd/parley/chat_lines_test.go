package main

import (
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
)

// TestStoredLineIsTrue: the server holds every sealed message in the
// recipient's mailbox until their client takes it, online or not, so the
// line for a StoredEvent must not say the recipient is offline (it did,
// right after "bob is online").
func TestStoredLineIsTrue(t *testing.T) {
	got := eventLine(client.StoredEvent{ID: "m1", To: "bob"})
	if strings.Contains(got, "offline") || !strings.Contains(got, "bob") || !strings.Contains(got, "server") {
		t.Fatalf("stored line %q: want the server holding it for bob, not a claim that bob is offline", got)
	}
}
