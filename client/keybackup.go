package client

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/parley-voice/parley/proto"
)

// A key backup keeps a name from being lost with a device: the identity
// key that owns the name and the encryption key sealed messages wait for,
// wrapped under a passphrase. The page (identity.js) writes and reads the
// same file, so a name moves between a browser and a terminal.
//
//	key      PBKDF2-HMAC-SHA256(passphrase, salt = 16 random bytes,      RFC 8018 §5.2
//	                            600,000 iterations, 32 bytes)           (OWASP 2023)
//	seal     AES-256-GCM(key, nonce = 12 random bytes,                   NIST SP 800-38D
//	                     aad = "parley-key-backup-v1\n" + name,
//	                     JSON {ed25519_seed, x25519})                   raw 32-byte keys, base64
//	file     JSON {parley_key_backup: 1, name, public_key, kdf, iterations, salt, nonce, ciphertext}
const (
	keyBackupVersion    = 1
	keyBackupIterations = 600_000
	keyBackupKDF        = "PBKDF2-HMAC-SHA256"
	keyBackupLabel      = "parley-key-backup-v1\n"
	// MinPassphrase is the shortest passphrase a backup accepts (runes).
	MinPassphrase = 8
)

// Errors of key backups.
var (
	ErrWrongPassphrase = errors.New("client: wrong passphrase, or the backup was changed")
	ErrNotABackup      = errors.New("client: not a Parley key backup")
	ErrWeakPassphrase  = fmt.Errorf("client: the passphrase must be at least %d characters", MinPassphrase)
	ErrProfileHasKey   = errors.New("client: the profile already holds a different identity key")
)

// KeyBackup is the file a backup is kept in.
type KeyBackup struct {
	Version    int    `json:"parley_key_backup"`
	Name       string `json:"name"`
	PublicKey  string `json:"public_key"` // base64 Ed25519 public key (which name it owns)
	KDF        string `json:"kdf"`
	Iterations int    `json:"iterations"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

type keyBackupSecret struct {
	Ed25519Seed []byte `json:"ed25519_seed"`
	X25519      []byte `json:"x25519"`
}

func keyBackupAEAD(passphrase string, salt []byte, iter int) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, passphrase, salt, iter, 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// ExportKeys wraps the identity key and encryption key of name under
// passphrase and returns the backup file's bytes.
func ExportKeys(name string, id ed25519.PrivateKey, enc *ecdh.PrivateKey, passphrase string) ([]byte, error) {
	if utf8.RuneCountInString(passphrase) < MinPassphrase {
		return nil, ErrWeakPassphrase
	}
	if err := proto.ValidateName(name); err != nil {
		return nil, err
	}
	if len(id) != ed25519.PrivateKeySize || enc == nil {
		return nil, fmt.Errorf("%w: no key to export", ErrBadConfig)
	}
	b := KeyBackup{Version: keyBackupVersion, Name: name, PublicKey: base64.StdEncoding.EncodeToString(id.Public().(ed25519.PublicKey)),
		KDF: keyBackupKDF, Iterations: keyBackupIterations, Salt: make([]byte, 16), Nonce: make([]byte, 12)}
	rand.Read(b.Salt)
	rand.Read(b.Nonce)
	aead, err := keyBackupAEAD(passphrase, b.Salt, b.Iterations)
	if err != nil {
		return nil, err
	}
	plain, _ := json.Marshal(keyBackupSecret{Ed25519Seed: id.Seed(), X25519: enc.Bytes()})
	b.Ciphertext = aead.Seal(nil, b.Nonce, plain, []byte(keyBackupLabel+name))
	return json.MarshalIndent(b, "", "  ")
}

// ImportKeys opens a backup with passphrase and returns the name it was
// made for and its keys.
func ImportKeys(data []byte, passphrase string) (name string, id ed25519.PrivateKey, enc *ecdh.PrivateKey, err error) {
	var b KeyBackup
	if err := json.Unmarshal(data, &b); err != nil || b.Version != keyBackupVersion || b.KDF != keyBackupKDF {
		return "", nil, nil, ErrNotABackup
	}
	if b.Iterations < 100_000 || b.Iterations > 10_000_000 || len(b.Salt) < 16 || len(b.Nonce) != 12 || proto.ValidateName(b.Name) != nil {
		return "", nil, nil, fmt.Errorf("%w: bad parameters", ErrNotABackup)
	}
	aead, err := keyBackupAEAD(passphrase, b.Salt, b.Iterations)
	if err != nil {
		return "", nil, nil, err
	}
	plain, err := aead.Open(nil, b.Nonce, b.Ciphertext, []byte(keyBackupLabel+b.Name))
	if err != nil {
		return "", nil, nil, ErrWrongPassphrase
	}
	var s keyBackupSecret
	if err := json.Unmarshal(plain, &s); err != nil || len(s.Ed25519Seed) != ed25519.SeedSize {
		return "", nil, nil, fmt.Errorf("%w: bad contents", ErrNotABackup)
	}
	id = ed25519.NewKeyFromSeed(s.Ed25519Seed)
	if enc, err = ecdh.X25519().NewPrivateKey(s.X25519); err != nil {
		return "", nil, nil, fmt.Errorf("%w: bad encryption key", ErrNotABackup)
	}
	if base64.StdEncoding.EncodeToString(id.Public().(ed25519.PublicKey)) != b.PublicKey {
		return "", nil, nil, fmt.Errorf("%w: the key does not match its public key", ErrNotABackup)
	}
	return b.Name, id, enc, nil
}

// SaveKeys writes id and enc into profile dir as identity.pem and
// encryption.pem (mode 0600). A profile that already holds a different
// identity key is left alone (ErrProfileHasKey): its name would be lost.
func SaveKeys(dir string, id ed25519.PrivateKey, enc *ecdh.PrivateKey) error {
	idPath, encPath := filepath.Join(dir, "identity.pem"), filepath.Join(dir, "encryption.pem")
	if _, err := os.Stat(idPath); err == nil {
		old, err := LoadOrCreateIdentity(dir)
		if err != nil {
			return err
		}
		if !old.Equal(id) {
			return fmt.Errorf("%w (%s); import into a new profile", ErrProfileHasKey, idPath)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("client: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client: profile dir: %w", err)
	}
	if err := writeKeyFile(idPath, "PARLEY ED25519 PRIVATE KEY", id.Seed()); err != nil {
		return err
	}
	return writeKeyFile(encPath, "PARLEY X25519 PRIVATE KEY", enc.Bytes())
}
