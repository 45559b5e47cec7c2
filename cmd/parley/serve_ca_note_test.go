package main

import (
	"strings"
	"testing"

	"github.com/parley-voice/parley/internal/testutil"
)

// TestServeCANote: with a certificate no public CA signed (a self-made
// one, a private CA), serve says that clients need --ca, naming the file;
// the chat command it prints would fail without it.
func TestServeCANote(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certFile, keyFile := ca.Issue(t, "parley.test", "127.0.0.1").WriteFiles(t, dir)
	st, err := (&tlsFlags{certFile: certFile, keyFile: keyFile}).setup(dir, newTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	note := st.caNote(certFile)
	for _, w := range []string{"--ca", certFile} {
		if !strings.Contains(note, w) {
			t.Errorf("note %q does not name %q", note, w)
		}
	}
	var none *serveTLS // plain HTTP
	if n := none.caNote(""); n != "" {
		t.Errorf("plain HTTP: note %q", n)
	}
}
