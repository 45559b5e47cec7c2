package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"golang.org/x/net/dns/dnsmessage"
)

// TestServeACME: `parley serve --acme DOMAIN` gets its certificate from a
// real ACME CA (Let's Encrypt's test server Pebble, run on loopback with a
// DNS server of the test's that points the domain at 127.0.0.1). Pebble's
// validator checks TLS-ALPN-01 (RFC 8737) on the very port the page is
// served on; the page is then served with the issued certificate, which a
// restarted server reads back from --data without asking the CA again.
func TestServeACME(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Pebble and the binary")
	}
	dir := t.TempDir()
	pebble := filepath.Join(dir, "pebble")
	if out, err := exec.Command("go", "build", "-o", pebble, "github.com/letsencrypt/pebble/v2/cmd/pebble").CombinedOutput(); err != nil {
		t.Fatalf("build pebble: %v\n%s", err, out)
	}
	const domain = "parley.test"
	dns := startDNS(t, domain)
	port := freePort(t) // the CA validates on the domain's TLS port: the one serve listens on
	acmePort, mgmtPort := freePort(t), freePort(t)

	// Pebble's own HTTPS (the ACME directory) with a test CA parley trusts via --acme-ca.
	ca := testutil.NewCA(t)
	leaf := ca.Issue(t, "127.0.0.1", "localhost")
	cert, key := leaf.WriteFiles(t, dir)
	caFile := filepath.Join(dir, "pebble-https-ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": fmt.Sprintf("127.0.0.1:%d", acmePort), "managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate": cert, "privateKey": key, "httpPort": freePort(t), "tlsPort": port,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
	}}
	confFile := filepath.Join(dir, "pebble.json")
	b, _ := json.Marshal(conf)
	os.WriteFile(confFile, b, 0o600)
	pc := exec.Command(pebble, "-config", confFile, "-dnsserver", dns)
	pc.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	var pout strings.Builder
	pc.Stdout, pc.Stderr = &pout, &pout
	if err := pc.Start(); err != nil {
		t.Fatal(err)
	}
	stopPebble := sync.OnceFunc(func() { pc.Process.Kill(); pc.Wait() })
	t.Cleanup(func() {
		stopPebble()
		if t.Failed() {
			t.Logf("pebble:\n%s", pout.String())
		}
	})
	mgmt := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}, Timeout: 5 * time.Second}
	var roots *x509.CertPool
	testutil.Eventually(t, 20*time.Second, "pebble up", func() bool {
		resp, err := mgmt.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		pem, _ := io.ReadAll(resp.Body)
		roots = x509.NewCertPool()
		return resp.StatusCode == 200 && roots.AppendCertsFromPEM(pem)
	})

	data := filepath.Join(dir, "server")
	serve := func() *proc {
		return start(t, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", data, "--supernode", "off", "--no-stun",
			"--acme", domain, "--acme-directory", fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort), "--acme-ca", caFile)
	}
	srv := serve()
	srv.waitLine("the URL", func(s string) bool { return strings.Contains(s, "https://"+domain+":") })
	get := func() *x509.Certificate {
		t.Helper()
		hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(port))
			},
		}}
		resp, err := hc.Get(fmt.Sprintf("https://%s:%d/healthz", domain, port))
		if err != nil {
			t.Fatalf("GET the page under the ACME certificate: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("healthz: %s", resp.Status)
		}
		return resp.TLS.PeerCertificates[0]
	}
	first := get() // the first handshake runs the ACME order (TLS-ALPN-01 on this port)
	if first.VerifyHostname(domain) != nil {
		t.Fatalf("certificate for %v, want %s", first.DNSNames, domain)
	}

	// Restarted with the CA gone: the certificate comes from --data.
	srv.stop()
	stopPebble()
	srv = serve()
	srv.waitLine("the URL", func(s string) bool { return strings.Contains(s, "https://"+domain+":") })
	if again := get(); !again.Equal(first) {
		t.Fatalf("after a restart the server shows another certificate (serial %v, was %v)", again.SerialNumber, first.SerialNumber)
	}
	if _, err := os.Stat(filepath.Join(data, "acme", domain)); err != nil {
		t.Errorf("certificate not cached in --data: %v", err)
	}
}

// freePort finds a TCP port free on 127.0.0.1 now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDNS answers A queries for name with 127.0.0.1 (and nothing else),
// over UDP and TCP on one loopback port, for the test CA's validator.
func startDNS(t *testing.T, name string) string {
	t.Helper()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); tl.Close() })
	answer := func(q []byte) []byte {
		var p dnsmessage.Parser
		h, err := p.Start(q)
		if err != nil {
			return nil
		}
		qs, err := p.Question()
		if err != nil {
			return nil
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.StartQuestions()
		b.Question(qs)
		b.StartAnswers()
		if qs.Type == dnsmessage.TypeA && strings.EqualFold(strings.TrimSuffix(qs.Name.String(), "."), name) {
			b.AResource(dnsmessage.ResourceHeader{Name: qs.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
		}
		msg, _ := b.Finish()
		return msg
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if msg := answer(buf[:n]); msg != nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { // RFC 1035 section 4.2.2: a two-byte length before each message
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				for {
					var l [2]byte
					if _, err := io.ReadFull(c, l[:]); err != nil {
						return
					}
					q := make([]byte, int(l[0])<<8|int(l[1]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					msg := answer(q)
					if msg == nil {
						return
					}
					c.Write(append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...))
				}
			}()
		}
	}()
	return tl.Addr().String()
}
