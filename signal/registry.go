package signal

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/parley-voice/parley/proto"
	bolt "go.etcd.io/bbolt"
)

// registry binds display names to the Ed25519 key that first registered
// them. Bindings are permanent: another key can never take a name. Next to
// each name it keeps the X25519 encryption key the owner last signed in
// with (and its binding signature), so others can seal offline messages to
// a user who is not there (proto/offline.go).
type registry interface {
	// Bind binds name to key if it is free, or checks that it is bound
	// to key. It returns ErrNameTaken when another key holds the name.
	// A non-empty enc (an encryption key with its binding signature,
	// already verified) replaces the one kept for the name.
	Bind(name string, key ed25519.PublicKey, enc encBinding) error
	// Lookup returns what is registered for name.
	Lookup(name string) (regEntry, bool, error)
	// SetLastSeen records when name went offline (unix ms); LastSeen
	// returns every record, so offline users and their keys are listed
	// after a restart too.
	SetLastSeen(name string, ms int64) error
	LastSeen() (map[string]int64, error)
	Close() error
}

// encBinding is an encryption key and its binding signature, base64 as on
// the wire (proto.Auth.EncKey, EncSig).
type encBinding struct {
	Key, Sig string
}

// regEntry is one registered name.
type regEntry struct {
	Key ed25519.PublicKey
	Enc encBinding // zero if the owner never sent one
}

// memRegistry keeps bindings in memory (Config.DataDir empty).
type memRegistry struct {
	mu    sync.Mutex // guards names, seen
	names map[string]regEntry
	seen  map[string]int64
}

func newMemRegistry() *memRegistry {
	return &memRegistry{names: map[string]regEntry{}, seen: map[string]int64{}}
}

func (r *memRegistry) SetLastSeen(name string, ms int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[name] = ms
	return nil
}

func (r *memRegistry) LastSeen() (map[string]int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.seen), nil
}

func (r *memRegistry) Bind(name string, key ed25519.PublicKey, enc encBinding) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.names[name]
	if ok && !bytes.Equal(e.Key, key) {
		return ErrNameTaken
	}
	if !ok {
		e.Key = append(ed25519.PublicKey(nil), key...)
	}
	if enc.Key != "" {
		e.Enc = enc
	}
	r.names[name] = e
	return nil
}

func (r *memRegistry) Lookup(name string) (regEntry, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.names[name]
	return e, ok, nil
}

func (r *memRegistry) Close() error { return nil }

var (
	bucketNames    = []byte("names")
	bucketEncKeys  = []byte("enc_keys")
	bucketLastSeen = []byte("last_seen") // name -> 8-byte big-endian unix ms
)

// boltRegistry keeps bindings in a bbolt file in Config.DataDir, written
// (and fsynced) before the client is welcomed. Bucket "names" maps a name
// to its 32-byte identity key; "enc_keys" maps it to the 32-byte X25519
// key followed by the 64-byte binding signature.
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
		if _, err := tx.CreateBucketIfNotExists(bucketNames); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketLastSeen); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketEncKeys)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("signal: init %s: %w", path, err)
	}
	return &boltRegistry{db: db}, nil
}

func (r *boltRegistry) SetLastSeen(name string, ms int64) error {
	return r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLastSeen).Put([]byte(name), binary.BigEndian.AppendUint64(nil, uint64(ms)))
	})
}

func (r *boltRegistry) LastSeen() (map[string]int64, error) {
	out := map[string]int64{}
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLastSeen).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				out[string(k)] = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	return out, err
}

// DB exposes the database so other stores (offline messages) share the file.
func (r *boltRegistry) DB() *bolt.DB { return r.db }

func (r *boltRegistry) Bind(name string, key ed25519.PublicKey, enc encBinding) error {
	var rec []byte
	if enc.Key != "" {
		k, err1 := base64.StdEncoding.DecodeString(enc.Key)
		s, err2 := base64.StdEncoding.DecodeString(enc.Sig)
		if err1 != nil || err2 != nil || len(k) != proto.EncKeySize || len(s) != ed25519.SignatureSize {
			return fmt.Errorf("signal: malformed encryption key for %s", name)
		}
		rec = append(k, s...)
	}
	// A sign-in that changes nothing writes nothing (no fsync).
	var same bool
	if err := r.db.View(func(tx *bolt.Tx) error {
		k := tx.Bucket(bucketNames).Get([]byte(name))
		same = k != nil && bytes.Equal(k, key) && (rec == nil || bytes.Equal(tx.Bucket(bucketEncKeys).Get([]byte(name)), rec))
		if k != nil && !bytes.Equal(k, key) {
			return ErrNameTaken
		}
		return nil
	}); err != nil || same {
		return err
	}
	return r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNames)
		if k := b.Get([]byte(name)); k != nil {
			if !bytes.Equal(k, key) {
				return ErrNameTaken
			}
		} else if err := b.Put([]byte(name), key); err != nil {
			return err
		}
		if rec == nil {
			return nil
		}
		return tx.Bucket(bucketEncKeys).Put([]byte(name), rec)
	})
}

func (r *boltRegistry) Lookup(name string) (regEntry, bool, error) {
	var e regEntry
	var ok bool
	err := r.db.View(func(tx *bolt.Tx) error {
		k := tx.Bucket(bucketNames).Get([]byte(name))
		if k == nil {
			return nil
		}
		ok = true
		e.Key = append(ed25519.PublicKey(nil), k...)
		if rec := tx.Bucket(bucketEncKeys).Get([]byte(name)); len(rec) == proto.EncKeySize+ed25519.SignatureSize {
			e.Enc = encBinding{
				Key: base64.StdEncoding.EncodeToString(rec[:proto.EncKeySize]),
				Sig: base64.StdEncoding.EncodeToString(rec[proto.EncKeySize:]),
			}
		}
		return nil
	})
	return e, ok, err
}

func (r *boltRegistry) Close() error { return r.db.Close() }
