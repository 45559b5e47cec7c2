// Package signaltest starts a real signaling server on 127.0.0.1 for tests.
package signaltest

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/parley-voice/parley/signal"
)

// Server is a running signaling server.
type Server struct {
	*signal.Server
	// URL is the WebSocket URL clients dial (ws://127.0.0.1:PORT/ws).
	URL string
	// HTTP is the base URL (http://127.0.0.1:PORT).
	HTTP string
}

// Start runs a signaling server on 127.0.0.1:0 until the test ends. cfg
// may be the zero Config; Listen is ignored.
func Start(t testing.TB, cfg signal.Config) *Server {
	t.Helper()
	srv, err := signal.New(cfg)
	if err != nil {
		t.Fatalf("signaltest: new: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("signaltest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, signal.ErrClosed) {
			t.Errorf("signaltest: serve: %v", err)
		}
	})
	addr := ln.Addr().String()
	return &Server{Server: srv, URL: "ws://" + addr + "/ws", HTTP: "http://" + addr}
}
