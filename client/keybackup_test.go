package client_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/parley-voice/parley/client"
)

// TestKeyBackupRoundTrip: a profile's keys, exported under a passphrase,
// come back whole in another profile; a wrong passphrase, a changed file
// and a weak passphrase are refused in words; a profile that already owns
// another name is never overwritten.
func TestKeyBackupRoundTrip(t *testing.T) {
	src := t.TempDir()
	id, err := client.LoadOrCreateIdentity(src)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := client.LoadOrCreateEncKey(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.ExportKeys("alice", id, enc, "short"); !errors.Is(err, client.ErrWeakPassphrase) {
		t.Errorf("weak passphrase: %v", err)
	}
	data, err := client.ExportKeys("alice", id, enc, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, id.Seed()) {
		t.Fatal("the backup holds the seed in the clear")
	}
	if _, _, _, err := client.ImportKeys(data, "wrong horse battery"); !errors.Is(err, client.ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v", err)
	}
	changed := bytes.Replace(data, []byte(`"name": "alice"`), []byte(`"name": "mallory"`), 1)
	if _, _, _, err := client.ImportKeys(changed, "correct horse battery"); !errors.Is(err, client.ErrWrongPassphrase) {
		t.Errorf("a backup renamed to another name opened: %v", err)
	}
	if _, _, _, err := client.ImportKeys([]byte(`{"hello":1}`), "x"); !errors.Is(err, client.ErrNotABackup) {
		t.Errorf("not a backup: %v", err)
	}
	name, id2, enc2, err := client.ImportKeys(data, "correct horse battery")
	if err != nil || name != "alice" || !id2.Equal(id) || !bytes.Equal(enc2.Bytes(), enc.Bytes()) {
		t.Fatalf("import: %v %q", err, name)
	}
	dst := filepath.Join(t.TempDir(), "new")
	if err := client.SaveKeys(dst, id2, enc2); err != nil {
		t.Fatal(err)
	}
	got, _ := client.LoadOrCreateIdentity(dst)
	gotEnc, _ := client.LoadOrCreateEncKey(dst)
	if !got.Equal(id) || !bytes.Equal(gotEnc.Bytes(), enc.Bytes()) {
		t.Fatal("restored profile holds other keys")
	}
	if fi, _ := os.Stat(filepath.Join(dst, "identity.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("identity.pem mode %v", fi.Mode().Perm())
	}
	other := t.TempDir()
	client.LoadOrCreateIdentity(other)
	_, k3, _ := ed25519.GenerateKey(nil)
	x3, _ := ecdh.X25519().GenerateKey(nil)
	if err := client.SaveKeys(other, k3, x3); !errors.Is(err, client.ErrProfileHasKey) {
		t.Errorf("overwrote a profile's key: %v", err)
	}
}
