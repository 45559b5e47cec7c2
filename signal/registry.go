package signal

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// registry binds display names to the Ed25519 key that first registered
// them. Bindings are permanent: another key can never take a name.
type registry interface {
	// Bind binds name to key if it is free, or checks that it is bound
	// to key. It returns ErrNameTaken when another key holds the name.
	Bind(name string, key ed25519.PublicKey) error
	Close() error
}

// memRegistry keeps bindings in memory (Config.DataDir empty).
type memRegistry struct {
	mu    sync.Mutex // guards names
	names map[string]ed25519.PublicKey
}

func newMemRegistry() *memRegistry { return &memRegistry{names: map[string]ed25519.PublicKey{}} }

func (r *memRegistry) Bind(name string, key ed25519.PublicKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.names[name]; ok {
		if !bytes.Equal(k, key) {
			return ErrNameTaken
		}
		return nil
	}
	r.names[name] = append(ed25519.PublicKey(nil), key...)
	return nil
}

func (r *memRegistry) Close() error { return nil }

var bucketNames = []byte("names")

// boltRegistry keeps bindings in a bbolt file in Config.DataDir, written
// (and fsynced) before the client is welcomed.
type boltRegistry struct {
	db *bolt.DB
}

func openBoltRegistry(dir string) (*boltRegistry, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("signal: data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, "signal.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("signal: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketNames)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("signal: init %s: %w", path, err)
	}
	return &boltRegistry{db: db}, nil
}

// DB exposes the database so other stores (offline messages) share the file.
func (r *boltRegistry) DB() *bolt.DB { return r.db }

func (r *boltRegistry) Bind(name string, key ed25519.PublicKey) error {
	return r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNames)
		if k := b.Get([]byte(name)); k != nil {
			if !bytes.Equal(k, key) {
				return ErrNameTaken
			}
			return nil
		}
		return b.Put([]byte(name), key)
	})
}

func (r *boltRegistry) Close() error { return r.db.Close() }
