// Package sigdial opens a signed-in signaling connection: it dials the
// server's WebSocket, reads the hello challenge, sends the signed auth and
// waits for the welcome (proto/README.md). The Go client and the supernode
// daemon both sign in this way.
package sigdial

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
)

// Options says where and as whom to sign in.
type Options struct {
	// URL is the signaling URL in any form URL accepts.
	URL string
	// Dial opens the TCP connection; nil uses the system dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures wss:// connections (RootCAs for a private CA); nil
	// uses the system's roots.
	TLS *tls.Config
	// Agent is sent as the User-Agent and in the auth.
	Agent string
	// Auth returns the signed auth for the server's challenge.
	Auth func(challenge string) *proto.Auth
	// Timeout bounds the whole sign-in. Zero means 10 s.
	Timeout time.Duration
}

// URL turns http(s)://host[:port][/], ws(s)://host[:port][/] or host:port
// into the signaling WebSocket URL (path /ws unless one is given).
func URL(s string) string {
	switch {
	case strings.HasPrefix(s, "http://"):
		s = "ws://" + strings.TrimPrefix(s, "http://")
	case strings.HasPrefix(s, "https://"):
		s = "wss://" + strings.TrimPrefix(s, "https://")
	case !strings.HasPrefix(s, "ws://") && !strings.HasPrefix(s, "wss://"):
		s = "ws://" + s
	}
	rest := s[strings.Index(s, "://")+3:]
	if !strings.Contains(rest, "/") || strings.HasSuffix(rest, "/") && strings.Count(rest, "/") == 1 {
		s = strings.TrimSuffix(s, "/") + "/ws"
	}
	return s
}

// SignIn dials and completes hello, auth and welcome. An error frame from
// the server (name_taken, auth_failed, ...) is returned as its *proto.Error.
// The returned connection has the protocol's read limit and no deadlines.
func SignIn(ctx context.Context, o Options) (*websocket.Conn, *proto.Welcome, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	url := URL(o.URL)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// ALPN http/1.1: a server sharing its port among protocols (parley
	// serve's 443) knows this is a web client before the first byte.
	tc := &tls.Config{}
	if o.TLS != nil {
		tc = o.TLS.Clone()
	}
	if len(tc.NextProtos) == 0 {
		tc.NextProtos = []string{"http/1.1"}
	}
	d := websocket.Dialer{HandshakeTimeout: timeout, NetDialContext: o.Dial, TLSClientConfig: tc}
	ws, resp, err := d.DialContext(dctx, url, http.Header{"User-Agent": []string{o.Agent}})
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", url, err)
	}
	resp.Body.Close()
	ws.SetReadLimit(proto.MaxFrameSize)
	ws.SetReadDeadline(time.Now().Add(timeout))
	fail := func(err error) (*websocket.Conn, *proto.Welcome, error) {
		ws.Close()
		return nil, nil, err
	}
	env, err := Read(ws)
	if err != nil {
		return fail(err)
	}
	hello, err := proto.DecodeBody[*proto.Hello](env)
	if err != nil || env.Type != proto.TypeHello {
		return fail(fmt.Errorf("expected hello, got %s: %v", env.Type, err))
	}
	auth := o.Auth(hello.Challenge)
	if auth.Agent == "" {
		auth.Agent = o.Agent
	}
	if err := Write(ws, proto.TypeAuth, "auth", auth); err != nil {
		return fail(err)
	}
	env, err = Read(ws)
	if err != nil {
		return fail(err)
	}
	switch env.Type {
	case proto.TypeWelcome:
	case proto.TypeError:
		pe, derr := proto.DecodeBody[*proto.Error](env)
		if derr != nil {
			return fail(derr)
		}
		return fail(pe)
	default:
		return fail(fmt.Errorf("expected welcome, got %s", env.Type))
	}
	w, err := proto.DecodeBody[*proto.Welcome](env)
	if err != nil {
		return fail(err)
	}
	ws.SetReadDeadline(time.Time{})
	return ws, w, nil
}

// Read reads and decodes one frame.
func Read(ws *websocket.Conn) (*proto.Envelope, error) {
	_, data, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return proto.Decode(data)
}

// Write encodes and writes one envelope, with a 10 s write deadline.
func Write(ws *websocket.Conn, t proto.Type, id string, b proto.Body) error {
	env, err := proto.New(t, id, "", b)
	if err != nil {
		return err
	}
	raw, err := proto.Encode(env)
	if err != nil {
		return err
	}
	ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, raw); err != nil {
		return fmt.Errorf("send %s: %w", t, err)
	}
	return nil
}
