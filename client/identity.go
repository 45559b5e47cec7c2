package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreateIdentity returns the Ed25519 key kept in dir/identity.pem,
// generating and saving one (mode 0600) on first use. The key is what owns
// a display name on the server.
func LoadOrCreateIdentity(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "identity.pem")
	data, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(data)
		if blk == nil || blk.Type != "PARLEY ED25519 PRIVATE KEY" || len(blk.Bytes) != ed25519.SeedSize {
			return nil, fmt.Errorf("client: %s is not a Parley identity key", path)
		}
		return ed25519.NewKeyFromSeed(blk.Bytes), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("client: read identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: profile dir: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PARLEY ED25519 PRIVATE KEY", Bytes: priv.Seed()})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return nil, fmt.Errorf("client: write identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("client: write identity: %w", err)
	}
	return priv, nil
}
