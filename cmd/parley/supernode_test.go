package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st supernode.Status
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	if err != nil || st.State != proto.SupernodePromoted || st.Name != "relay-one" || len(st.History) == 0 {
		t.Fatalf("status %+v (%v)", st, err)
	}
	if st.StartedAt.IsZero() || st.UptimeS < 0 {
		t.Errorf("no uptime: %+v", st)
	}
	assertSnakeCase(t, raw, "uptime_s", "wire_mbps", "bytes_relayed")
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

// TestSupernodeDefaultsBesideServe (issue 12): a standalone `parley
// supernode` on the same machine as `parley serve` starts with its
// defaults: none of its default ports is one serve takes by default on a
// server (STUN UDP 3478 and 3479, the built-in supernode's TURN UDP 3480
// and QUIC UDP 443, the page and TURN over TCP/TLS on TCP 443, the
// redirect on TCP 80). Before, its TURN UDP 3478 collided with serve's STUN.
func TestSupernodeDefaultsBesideServe(t *testing.T) {
	serve := map[string]bool{"udp/3478": true, "udp/3479": true, "udp/3480": true, "udp/443": true, "tcp/443": true, "tcp/80": true}
	if f := addServeSupernodeFlags(newFlagSet("serve", "", "")); !strings.HasSuffix(f.turnUDP, ":3480") || !strings.HasSuffix(f.quic, ":443") {
		t.Fatalf("serve's built-in supernode defaults changed (%s, %s): update this test", f.turnUDP, f.quic)
	}
	for _, d := range []struct{ proto, addr string }{
		{"udp", snDefaultQUIC}, {"udp", snDefaultTURNUDP}, {"tcp", snDefaultTURNTCP}, {"tcp", snDefaultTURNTLS},
	} {
		ap, err := netip.ParseAddrPort(d.addr)
		if err != nil {
			t.Fatal(err)
		}
		if k := fmt.Sprintf("%s/%d", d.proto, ap.Port()); serve[k] {
			t.Errorf("supernode default %s (%s) collides with parley serve's", d.addr, k)
		}
	}
}

// assertSnakeCase checks that every key of the JSON document is in one
// naming style (lower snake case) and that the want keys are there.
func assertSnakeCase(t *testing.T, raw []byte, want ...string) {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	style := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				seen[k] = true
				if !style.MatchString(k) {
					t.Errorf("status.json key %q is not snake_case", k)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	for _, k := range want {
		if !seen[k] {
			t.Errorf("status.json has no %q", k)
		}
	}
}
