package client

import (
	"crypto/ecdh"
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
	seed, err := loadOrCreateKeyFile(filepath.Join(dir, "identity.pem"), "PARLEY ED25519 PRIVATE KEY", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadOrCreateEncKey returns the X25519 encryption key kept in
// dir/encryption.pem, generating and saving one (mode 0600) on first use.
// Offline messages are sealed to it (offline.go); the client announces its
// public half bound to the identity key, so it may be replaced at any time
// (messages sealed to the old key and still waiting can then not be opened).
func LoadOrCreateEncKey(dir string) (*ecdh.PrivateKey, error) {
	raw, err := loadOrCreateKeyFile(filepath.Join(dir, "encryption.pem"), "PARLEY X25519 PRIVATE KEY", 32)
	if err != nil {
		return nil, err
	}
	k, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("client: encryption key: %w", err)
	}
	return k, nil
}

// loadOrCreateKeyFile reads the size-byte secret in the PEM file path
// (block type typ), or writes a random one there first.
func loadOrCreateKeyFile(path, typ string, size int) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(data)
		if blk == nil || blk.Type != typ || len(blk.Bytes) != size {
			return nil, fmt.Errorf("client: %s is not a %s", path, typ)
		}
		return blk.Bytes, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("client: read %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("client: profile dir: %w", err)
	}
	secret := make([]byte, size)
	rand.Read(secret) // never fails (Go 1.24+)
	if err := writeKeyFile(path, typ, secret); err != nil {
		return nil, err
	}
	return secret, nil
}

// writeKeyFile writes secret to path as a PEM block of type typ (mode
// 0600), replacing the file atomically.
func writeKeyFile(path, typ string, secret []byte) error {
	out := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: secret})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	return nil
}
