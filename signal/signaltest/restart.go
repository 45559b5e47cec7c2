package signaltest

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/parley-voice/parley/signal"
)

// Restartable is a signaling server on a fixed loopback address that a
// test can stop and start again (a new server, as after an operator's
// restart: nothing in memory survives).
type Restartable struct {
	// URL is the WebSocket URL clients dial; HTTP the base URL.
	URL, HTTP string

	t    testing.TB
	cfg  signal.Config
	addr string
	mu   sync.Mutex // guards stop
	stop func()
}

// StartRestartable runs a server on 127.0.0.1:0 until the test ends.
func StartRestartable(t testing.TB, cfg signal.Config) *Restartable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("signaltest: listen: %v", err)
	}
	r := &Restartable{t: t, cfg: cfg, addr: ln.Addr().String()}
	r.URL, r.HTTP = "ws://"+r.addr+"/ws", "http://"+r.addr
	r.serve(ln)
	t.Cleanup(r.Down)
	return r
}

func (r *Restartable) serve(ln net.Listener) {
	srv, err := signal.New(r.cfg)
	if err != nil {
		ln.Close()
		r.t.Fatalf("signaltest: new: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	r.mu.Lock()
	r.stop = func() { cancel(); <-done }
	r.mu.Unlock()
}

// Down stops the server: every client loses its connection.
func (r *Restartable) Down() {
	r.mu.Lock()
	stop := r.stop
	r.stop = nil
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Up starts a new server on the same address.
func (r *Restartable) Up() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("signaltest: listen again on %s: %v", r.addr, err)
	}
	r.serve(ln)
}
