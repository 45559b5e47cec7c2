package signal_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// upgrade opens /ws on base with the given Host and Origin headers and
// reports the HTTP status (101 when allowed).
func upgrade(t *testing.T, base, host, origin string, tlsConf *tls.Config) int {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: tlsConf}
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	if host != "" {
		h.Set("Host", host)
	}
	conn, resp, err := d.Dial(base+"/ws", h)
	if conn != nil {
		conn.Close()
	}
	if resp == nil {
		t.Fatalf("dial %s (Host %s, Origin %s): %v", base, host, origin, err)
	}
	return resp.StatusCode
}

// TestOriginRules: DNS rebinding (an attacker's name pointed at this
// server, or at one on a private network) and pages of another scheme are
// refused the WebSocket; the server's own pages and non-browser clients
// are not.
func TestOriginRules(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{PublicHosts: []string{"parley.example.org"}, AllowedOrigins: []string{"https://proxy.example.net"}})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.HTTP, "http://"))
	hp := func(h string) string { return net.JoinHostPort(h, port) }
	cases := []struct {
		name, host, origin string
		ok                 bool
	}{
		{"no Origin: a native client", "", "", true},
		{"the page by IP", hp("127.0.0.1"), "http://" + hp("127.0.0.1"), true},
		{"the page on localhost", hp("localhost"), "http://" + hp("localhost"), true},
		{"the page under the public name", hp("parley.example.org"), "http://" + hp("parley.example.org"), true},
		{"configured extra origin", hp("127.0.0.1"), "https://proxy.example.net", true},
		{"DNS rebinding: an unknown name that resolves here", hp("evil.example"), "http://" + hp("evil.example"), false},
		{"cross-origin page", hp("127.0.0.1"), "http://evil.example", false},
		{"https page on a plain-HTTP server", hp("127.0.0.1"), "https://" + hp("127.0.0.1"), false},
		{"another port", hp("127.0.0.1"), "http://127.0.0.1:1", false},
		{"opaque origin", hp("127.0.0.1"), "null", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code := upgrade(t, strings.Replace(srv.HTTP, "http://", "ws://", 1), tc.host, tc.origin, nil)
			if (code == http.StatusSwitchingProtocols) != tc.ok {
				t.Fatalf("status %d, want allowed=%v", code, tc.ok)
			}
		})
	}
}

// TestOriginOverTLS: on a TLS connection the page must be https.
func TestOriginOverTLS(t *testing.T) {
	s, err := signal.New(signal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	host := strings.TrimPrefix(ts.URL, "https://")
	conf := ts.Client().Transport.(*http.Transport).TLSClientConfig
	base := strings.Replace(ts.URL, "https://", "wss://", 1)
	if code := upgrade(t, base, "", "https://"+host, conf); code != http.StatusSwitchingProtocols {
		t.Errorf("https page on an https server: %d", code)
	}
	if code := upgrade(t, base, "", "http://"+host, conf); code == http.StatusSwitchingProtocols {
		t.Errorf("http page on an https server was allowed")
	}
}
