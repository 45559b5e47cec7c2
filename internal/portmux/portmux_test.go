package portmux

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
)

// stunBinding is a STUN Binding request (RFC 8489 section 5): type 0x0001,
// length 0, the magic cookie and a transaction id.
var stunBinding = []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

type muxed struct {
	m     *Mux
	ca    *testutil.CA
	conns map[Kind]chan net.Conn
}

// start runs a Mux on loopback with listeners for kinds, each feeding a channel.
func start(t *testing.T, cfg Config, kinds ...Kind) *muxed {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x := &muxed{conns: map[Kind]chan net.Conn{}}
	if cfg.TLS == nil {
		x.ca = testutil.NewCA(t)
		leaf := x.ca.Issue(t, "parley.test", "127.0.0.1")
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, NextProtos: NextProtos}
	} else if cfg.TLS == noTLS {
		cfg.TLS = nil
	}
	x.m = New(ln, cfg)
	for _, k := range kinds {
		ch := make(chan net.Conn, 4)
		x.conns[k] = ch
		sub := x.m.Listener(k)
		go func() {
			for {
				c, err := sub.Accept()
				if err != nil {
					return
				}
				ch <- c
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return x
}

var noTLS = &tls.Config{}

func (x *muxed) dialTLS(t *testing.T, alpn ...string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", x.m.Addr().String(), &tls.Config{RootCAs: x.ca.Pool(), ServerName: "parley.test", NextProtos: alpn})
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (x *muxed) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", x.m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expect waits for the connection of kind k and checks that it reads back
// exactly what the client wrote first (nothing lost to the peek).
func (x *muxed) expect(t *testing.T, k Kind, first []byte) net.Conn {
	t.Helper()
	select {
	case c := <-x.conns[k]:
		got := make([]byte, len(first))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, first) {
			t.Fatalf("%s conn read %q (%v), want %q", k, got, err, first)
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s connection (stats %+v)", k, x.m.Stats())
	}
	return nil
}

func TestClassify(t *testing.T) {
	get := []byte("GET / HTTP/1.1\r\nHost: parley.test\r\n\r\n")
	cases := []struct {
		name  string
		kind  Kind
		first []byte
		alpn  []string
		tls   bool
	}{
		{"plain HTTP", HTTP, get, nil, false},
		{"TURN over TCP", TURN, stunBinding, nil, false},
		{"HTTPS with ALPN http/1.1", HTTPS, get, []string{"h2", "http/1.1"}, true},
		{"HTTPS without ALPN", HTTPS, get, nil, true},
		{"TURN over TLS without ALPN", TURNS, stunBinding, nil, true},
		{"TURN over TLS with ALPN stun.turn", TURNS, stunBinding, []string{ALPNTURN}, true},
	}
	x := start(t, Config{}, HTTP, HTTPS, TURN, TURNS)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c net.Conn
			if tc.tls {
				tcn := x.dialTLS(t, tc.alpn...)
				c = tcn
			} else {
				c = x.dial(t)
			}
			if _, err := c.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			got := x.expect(t, tc.kind, tc.first)
			if _, isTLS := got.(*tls.Conn); tc.kind == HTTPS && len(tc.alpn) > 0 && !isTLS {
				t.Errorf("HTTPS conn with ALPN is a %T, want *tls.Conn (so http.Request.TLS is set)", got)
			}
			// The conn works both ways after classification.
			if _, err := got.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ok" {
				t.Fatalf("client read %q, %v", buf, err)
			}
			if n := x.m.Stats().Accepted[tc.kind]; n < 1 {
				t.Errorf("Accepted[%s] = %d", tc.kind, n)
			}
		})
	}
}

// readClosed reports whether the server closed c (EOF or reset) within 5 s.
func readClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestRefusals(t *testing.T) {
	t.Run("ACME TLS-ALPN-01 check is answered then closed", func(t *testing.T) {
		x := start(t, Config{}, HTTPS)
		c := x.dialTLS(t, ALPNACME)
		if p := c.ConnectionState().NegotiatedProtocol; p != ALPNACME {
			t.Fatalf("negotiated %q", p)
		}
		if !readClosed(c) {
			t.Fatal("connection left open")
		}
		testutil.Eventually(t, 5*time.Second, "acme counted", func() bool { return x.m.Stats().ACME == 1 })
	})
	t.Run("TLS without a config", func(t *testing.T) {
		x := start(t, Config{TLS: noTLS}, HTTP)
		_, err := tls.Dial("tcp", x.m.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			t.Fatal("TLS handshake succeeded on a mux without TLS")
		}
		testutil.Eventually(t, 5*time.Second, "refused counted", func() bool { return x.m.Stats().Refused == 1 })
	})
	t.Run("a kind nobody listens for", func(t *testing.T) {
		x := start(t, Config{}, HTTP)
		c := x.dial(t)
		c.Write(stunBinding)
		if !readClosed(c) {
			t.Fatal("TURN connection left open with no TURN listener")
		}
		testutil.Eventually(t, 5*time.Second, "refused counted", func() bool { return x.m.Stats().Refused == 1 })
	})
	t.Run("silent connection times out", func(t *testing.T) {
		x := start(t, Config{Timeout: 200 * time.Millisecond}, HTTP)
		c := x.dial(t)
		if !readClosed(c) {
			t.Fatal("silent connection left open")
		}
		testutil.Eventually(t, 5*time.Second, "timeout counted", func() bool { return x.m.Stats().Timeouts == 1 })
	})
	t.Run("a stalled TLS handshake times out", func(t *testing.T) {
		x := start(t, Config{Timeout: 200 * time.Millisecond}, HTTPS)
		c := x.dial(t)
		c.Write([]byte{0x16, 0x03, 0x01}) // a record header, then nothing
		if !readClosed(c) {
			t.Fatal("stalled handshake left open")
		}
		testutil.Eventually(t, 5*time.Second, "timeout counted", func() bool { return x.m.Stats().Timeouts == 1 })
	})
	t.Run("garbage after the TLS record byte", func(t *testing.T) {
		x := start(t, Config{}, HTTPS)
		c := x.dial(t)
		c.Write(append([]byte{0x16}, bytes.Repeat([]byte{0xff}, 64)...))
		if !readClosed(c) {
			t.Fatal("bad handshake left open")
		}
		testutil.Eventually(t, 5*time.Second, "tls failure counted", func() bool { return x.m.Stats().TLSFail == 1 })
	})
	t.Run("more pending than MaxPending", func(t *testing.T) {
		x := start(t, Config{MaxPending: 2, Timeout: 30 * time.Second}, HTTP)
		x.dial(t)
		x.dial(t)
		testutil.Eventually(t, 5*time.Second, "two pending", func() bool { return len(x.m.pending) == 2 })
		c := x.dial(t)
		if !readClosed(c) {
			t.Fatal("third connection not closed")
		}
		if n := x.m.Stats().Overload; n != 1 {
			t.Fatalf("Overload = %d", n)
		}
	})
}

// TestHTTPServers: real http.Servers on the HTTP and HTTPS listeners of one
// port; the HTTPS handler sees the TLS state.
func TestHTTPServers(t *testing.T) {
	x := start(t, Config{}, HTTP, HTTPS)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			io.WriteString(w, "tls:"+r.TLS.ServerName)
			return
		}
		io.WriteString(w, "plain")
	})
	for _, k := range []Kind{HTTP, HTTPS} {
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		ch := x.conns[k]
		ln := &chanListener{ch: ch, addr: x.m.Addr(), done: make(chan struct{})}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
	}
	get := func(alpn []string, url string) string {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x.ca.Pool(), ServerName: "parley.test", NextProtos: alpn}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	base := x.m.Addr().String() + "/"
	if got := get(nil, "http://"+base); got != "plain" {
		t.Errorf("http: %q", got)
	}
	if got := get([]string{"http/1.1"}, "https://"+base); got != "tls:parley.test" {
		t.Errorf("https with ALPN: %q, want the handler to see the TLS state", got)
	}
	// Without ALPN the first decrypted byte was peeked: still served over
	// TLS, though net/http cannot see the state through the wrapper.
	if got := get(nil, "https://"+base); got != "plain" && got != "tls:parley.test" {
		t.Errorf("https without ALPN: %q", got)
	}
}

// chanListener serves conns from the test's channel (the Mux listener is
// already drained into it by start).
type chanListener struct {
	ch   chan net.Conn
	addr net.Addr
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}
func (l *chanListener) Addr() net.Addr { return l.addr }
