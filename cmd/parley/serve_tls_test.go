package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// TestServeTLS: `parley serve --tls-cert --tls-key` serves the page over
// HTTPS, redirects plain HTTP on the same port, lets chat clients sign in
// over wss:// (--ca) and relays their call through the built-in
// supernode, whose TURN over TCP and TLS share the port (its promotion
// probes both there). A browser-style client, reaching the server under
// its name, gets turns:NAME:PORT in its welcome and allocates through it
// with the CA-issued certificate.
func TestServeTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	leaf := ca.Issue(t, "parley.test", "127.0.0.1")
	certFile, keyFile := leaf.WriteFiles(t, dir)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := start(t, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "server"),
		"--tls-cert", certFile, "--tls-key", keyFile, "--public-host", "parley.test",
		"--supernode", "on", "--supernode-allow", "127.0.0.0/8", "--supernode-quic", ":0", "--supernode-turn-udp", ":0")
	line := srv.waitLine("the URL", func(s string) bool { return strings.Contains(s, "https://parley.test:") })
	port := regexp.MustCompile(`https://parley\.test:(\d+)`).FindStringSubmatch(line)[1]
	addr := "127.0.0.1:" + port
	srv.waitLine("promotion", func(s string) bool { return strings.Contains(s, "promoted") })

	// The page over HTTPS, under the name and by IP; plain HTTP redirects.
	toLocal := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	hc := &http.Client{
		Transport:     &http.Transport{DialContext: toLocal, TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	for _, u := range []string{"https://parley.test:" + port + "/", "https://" + addr + "/"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<html") || resp.Header.Get("Content-Security-Policy") == "" {
			t.Fatalf("GET %s: %s, %d bytes", u, resp.Status, len(body))
		}
	}
	resp, err := hc.Get("http://parley.test:" + port + "/call?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "https://parley.test:"+port+"/call?x=1" {
		t.Fatalf("plain HTTP: %s, Location %q", resp.Status, loc)
	}

	// Native clients over wss://, relayed through the built-in supernode.
	relayedCall(t, "https://"+addr, dir, "serve-relay", "--ca", caFile)

	// A browser's view: signed in under the name, it is handed
	// turns:parley.test:PORT and allocates through it (TLS checked by name
	// against the CA, TURN on the shared port).
	_, key, _ := ed25519.GenerateKey(nil)
	ws, w, err := sigdial.SignIn(context.Background(), sigdial.Options{
		URL: "wss://parley.test:" + port + "/ws", Dial: toLocal, TLS: &tls.Config{RootCAs: ca.Pool()}, Agent: "test-browser",
		Auth: func(ch string) *proto.Auth { return proto.SignAuth(key, ch, "browser") },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var turnsURL, user, pass string
	for _, s := range w.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turns:") {
				turnsURL, user, pass = u, s.Username, s.Credential
			}
		}
	}
	if turnsURL != "turns:parley.test:"+port+"?transport=tcp" {
		t.Fatalf("welcome ICE servers %+v: want turns:parley.test:%s?transport=tcp", w.ICEServers, port)
	}
	for _, s := range w.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "transport=tcp") {
				t.Errorf("welcome offers plain TURN over TCP (%s) beside TLS on an HTTPS port", u)
			}
		}
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: "parley.test", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatalf("TURN over TLS to parley.test: %v", err)
	}
	defer tc.Close()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	tcl, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: addr, STUNServerAddr: addr, Username: user, Password: pass,
		Conn: turn.NewSTUNConn(tc), LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	if err := tcl.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := tcl.Allocate()
	if err != nil {
		t.Fatalf("allocate over turns:parley.test: %v", err)
	}
	relay.Close()
}
