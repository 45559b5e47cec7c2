package main

import (
	"net"
	"strings"
	"testing"
)

// TestServeURLNote: an operator who starts serve on an address other
// computers reach, without TLS, is told that browsers there need HTTPS
// (the page cannot sign in without a secure context); on loopback, or
// with HTTPS, the note is not printed.
func TestServeURLNote(t *testing.T) {
	for _, tc := range []struct {
		addr, publicHost string
		https            bool
		wantURL          string
		wantNote         bool
	}{
		{"127.0.0.1:8080", "", false, "http://127.0.0.1:8080", false},
		{"0.0.0.0:8080", "", false, "http://127.0.0.1:8080", false},
		{"[::1]:8080", "", false, "http://[::1]:8080", false},
		{"127.0.0.1:8080", "localhost", false, "http://localhost:8080", false},
		{"192.0.2.10:8080", "", false, "http://192.0.2.10:8080", true},
		{"0.0.0.0:80", "example.org", false, "http://example.org", true},
		{"0.0.0.0:443", "example.org", true, "https://example.org", false},
		{"[2001:db8::1]:443", "", true, "https://[2001:db8::1]", false},
	} {
		tcp, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		url := printServing(&b, tcp, tc.publicHost, tc.https)
		out := b.String()
		if url != tc.wantURL {
			t.Errorf("%s (host %q, https %v): URL %s, want %s", tc.addr, tc.publicHost, tc.https, url, tc.wantURL)
		}
		if !strings.Contains(out, "open "+tc.wantURL+"/") {
			t.Errorf("%s: printed %q, want the URL", tc.addr, out)
		}
		if got := strings.Contains(out, "only over HTTPS"); got != tc.wantNote {
			t.Errorf("%s (host %q, https %v): HTTPS note printed %v, want %v:\n%s", tc.addr, tc.publicHost, tc.https, got, tc.wantNote, out)
		}
	}
}
