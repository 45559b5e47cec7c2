package supernode

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLoadOrCreateCertIsStable: the fingerprint clients pin survives a
// restart; the key file is private.
func TestLoadOrCreateCertIsStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profile")
	a, err := LoadOrCreateCert(dir, "sn1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateCert(dir, "sn1")
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(a) == "" || Fingerprint(a) != Fingerprint(b) {
		t.Fatalf("fingerprint changed across loads: %s vs %s", Fingerprint(a), Fingerprint(b))
	}
	st, err := os.Stat(filepath.Join(dir, "relay-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	os.WriteFile(filepath.Join(dir, "relay-cert.pem"), []byte("garbage"), 0o600)
	if _, err := LoadOrCreateCert(dir, "sn1"); err == nil {
		t.Fatal("a damaged certificate file was silently replaced")
	}
}
