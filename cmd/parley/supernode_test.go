package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/supernode"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSupernodeCommand runs `parley supernode` against a loopback server:
// it prints its addresses, the server's decision with its reason, and
// serves the same on its status page, then stops cleanly.
func TestSupernodeCommand(t *testing.T) {
	sig := signaltest.Start(t, signal.Config{Supernodes: signal.SupernodeConfig{
		AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeBytes: 128 << 10, MinMbps: 1, ProbeTimeout: time.Second,
	}})
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runSupernodeTo(ctx, []string{"--server", sig.HTTP, "--name", "relay-one", "--profile", t.TempDir(),
			"--listen-quic", "127.0.0.1:0", "--listen-turn-udp", "127.0.0.1:0", "--listen-turn-tcp", "127.0.0.1:0",
			"--listen-turn-tls", "127.0.0.1:0", "--status-addr", "127.0.0.1:0", "--discover-nat=false", "--log-level", "error"}, &out)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "promoted:") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no promotion printed; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := regexp.MustCompile(`status page (http://\S+/)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no status page in output:\n%s", out.String())
	}
	resp, err := http.Get(m[1] + "status.json")
	if err != nil {
		t.Fatal(err)
	}
	var st supernode.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.State != proto.SupernodePromoted || st.Name != "relay-one" || len(st.History) == 0 {
		t.Fatalf("status %+v (%v)", st, err)
	}
	for _, path := range []string{"", "metrics"} {
		resp, err := http.Get(m[1] + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("output:\n%s", out.String())
}
