// Package supernodetest starts real supernodes for tests: on 127.0.0.1 by
// default, or wherever the Config's PacketListener and Listen put them.
package supernodetest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
)

var seq atomic.Int64

// Loopback is the peer allow-list a loopback supernode needs to relay
// between peers on 127.0.0.1.
var Loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// Supernode is a running supernode.
type Supernode struct {
	*supernode.Server
	// Done closes when Run has returned; Err is its result then.
	Done chan struct{}
	Err  error
	stop context.CancelFunc
}

// Start runs a supernode signed in to server until the test ends. Zero
// fields of cfg get test values: a fresh key, a unique name, listeners on
// 127.0.0.1:0 and fast reconnects.
func Start(t testing.TB, server string, cfg supernode.Config) *Supernode {
	t.Helper()
	cfg.Server = server
	if cfg.Key == nil {
		_, cfg.Key, _ = ed25519.GenerateKey(nil)
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("sn%d", seq.Add(1))
	}
	for _, p := range []*string{&cfg.ListenQUIC, &cfg.ListenTURNUDP, &cfg.ListenTURNTCP, &cfg.ListenTURNTLS} {
		if *p == "" {
			*p = "127.0.0.1:0"
		}
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 500*time.Millisecond
	}
	srv, err := supernode.New(cfg)
	if err != nil {
		t.Fatalf("supernodetest: new: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sn := &Supernode{Server: srv, Done: make(chan struct{}), stop: cancel}
	go func() {
		defer close(sn.Done)
		sn.Err = srv.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		select {
		case <-sn.Done:
		case <-time.After(10 * time.Second):
			t.Errorf("supernodetest: %s: Run did not return", cfg.Name)
		}
	})
	return sn
}

// Stop stops the supernode and waits for Run to return.
func (s *Supernode) Stop() {
	s.stop()
	s.Close()
	<-s.Done
}

// WaitState waits up to d for the supernode to reach state and returns its
// status then; it fails the test with the decisions so far otherwise.
func (s *Supernode) WaitState(t testing.TB, st proto.SupernodeState, d time.Duration) supernode.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		cur := s.Status()
		if cur.State == st {
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatalf("supernode %s: state %s (%s) after %s, want %s; decisions: %v", cur.Name, cur.State, cur.Reason, d, st, cur.History)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
