package main

import (
	"net"
	"os"
	"strings"
	"testing"
)

// TestSelfCommand: the commands serve prints name the binary as the
// operator runs it; an installed parley is not told to "go run ./cmd/parley"
// (there is no source tree on a server).
func TestSelfCommand(t *testing.T) {
	for _, tc := range []struct{ arg0, want string }{
		{"/root/.cache/go-build/08/0865b11e-d/parley", "go run ./cmd/parley"}, // go run, Go 1.24+
		{"/tmp/go-build1234/b001/exe/parley", "go run ./cmd/parley"},          // go run, older
		{"parley", "parley"},
		{"./parley", "./parley"},
		{"/usr/local/bin/parley", "/usr/local/bin/parley"},
	} {
		if got := selfCommand(tc.arg0); got != tc.want {
			t.Errorf("selfCommand(%q) = %q, want %q", tc.arg0, got, tc.want)
		}
	}
	// What serve prints for an installed binary.
	old := os.Args[0]
	os.Args[0] = "/usr/local/bin/parley"
	defer func() { os.Args[0] = old }()
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	var b strings.Builder
	printServing(&b, tcp, "", false)
	out := b.String()
	if strings.Contains(out, "go run") || !strings.Contains(out, "/usr/local/bin/parley chat --server http://127.0.0.1:8080") {
		t.Errorf("printed %q, want the installed binary's chat command", out)
	}
}
