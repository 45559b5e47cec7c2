package nat

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run when goroutines started by this package (or the
// vnet routers its tests build) outlive the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeaks(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// waitNoLeaks polls until no goroutine runs code of this package or of
// vnet, and returns the offending stacks if some remain.
func waitNoLeaks(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var bad []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "nat.TestMain") || strings.Contains(g, "testing.tRunner") {
				continue
			}
			if strings.Contains(g, "parley-voice/parley/nat.") || strings.Contains(g, "transport/v4/vnet.") {
				bad = append(bad, g)
			}
		}
		if len(bad) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(bad, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startServer creates a server from cfg, runs it, and stops it (checking
// that Run returned nil) when the test ends.
func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = s.Close()
	})
	return s
}

// loopback2 is the second loopback IP used for change-IP on real sockets;
// Linux routes all of 127.0.0.0/8 to lo.
var (
	loopback1 = netip.MustParseAddr("127.0.0.1")
	loopback2 = netip.MustParseAddr("127.0.0.2")
)

// fastClient returns DiscoverConfig timing for tests: quick retransmits,
// short give-up.
func fastClient(cfg DiscoverConfig) DiscoverConfig {
	if cfg.RTO == 0 {
		cfg.RTO = 20 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 250 * time.Millisecond
	}
	return cfg
}
