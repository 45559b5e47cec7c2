package signal_test

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
)

// TestBurstDoesNotDropHealthyClient (issue 15, found at scale): a client
// that reads, but not at once, while the server sends it a burst of more
// frames than fit in the network's buffers (here 300 sealed messages at
// sign-in through a 4 KiB connection) is not dropped as slow. (Before, a
// queue of 256 frames was the whole allowance: when the server fell
// behind, its slow-client check dropped healthy clients by the thousand.)
// A client is slow when a write to it stalls for WriteTimeout.
func TestBurstDoesNotDropHealthyClient(t *testing.T) {
	srv, d := startMemBuf(t, signal.Config{Offline: signal.OfflineLimits{MaxMessages: 400}}, 4096)
	bobKey := fillMailbox(t, srv, d, 4, 75)
	bob, _ := loginWith(t, d, memURL, "bob", bobKey)
	time.Sleep(500 * time.Millisecond) // busy for a moment: the burst piles up in the server's queue
	got := 0
	for got < 300 {
		env, err := bob.tryRead(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d of 300 messages: %v (stats %+v)", got, err, srv.Stats())
		}
		if env.Type == proto.TypeSealed {
			got++
		}
	}
	if st := srv.Stats(); st.SlowClients != 0 {
		t.Fatalf("slow clients %d", st.SlowClients)
	}
}

// TestStalledClientDropped: a client that stops reading altogether is
// disconnected once a write to it stalls for WriteTimeout.
func TestStalledClientDropped(t *testing.T) {
	srv, d := startMemBuf(t, signal.Config{WriteTimeout: 300 * time.Millisecond}, 4096)
	bobKey := fillMailbox(t, srv, d, 2, 20)
	loginWith(t, d, memURL, "bob", bobKey) // and never reads again
	testutil.Eventually(t, 10*time.Second, "bob dropped", func() bool {
		return len(srv.Online()) == 0 && srv.Stats().SlowClients == 1
	})
}

const memURL = "ws://parley/ws"

// fillMailbox registers bob and has senders leave each sealed messages
// for him; it returns bob's key.
func fillMailbox(t *testing.T, srv *signal.Server, d *websocket.Dialer, senders, each int) ed25519.PrivateKey {
	t.Helper()
	bobKey := newKey()
	c, _ := loginWith(t, d, memURL, "bob", bobKey)
	c.conn.Close()
	for i := range senders {
		a, _ := loginWith(t, d, memURL, fmt.Sprint("sender", i), nil)
		for j := range each {
			id := fmt.Sprintf("m%d-%d", i, j)
			a.send(proto.TypeSealed, id, "bob", sealFor(t, a, id, "a message in the burst"))
			a.readUntil(proto.TypeAck)
		}
		a.conn.Close()
	}
	testutil.Eventually(t, 10*time.Second, "everyone signed out", func() bool { return len(srv.Online()) == 0 })
	if n, _ := srv.OfflineWaiting("bob"); n != senders*each {
		t.Fatalf("%d waiting, want %d", n, senders*each)
	}
	return bobKey
}
