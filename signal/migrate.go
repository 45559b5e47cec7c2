package signal

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
	bolt "go.etcd.io/bbolt"
)

// Before NATS, the server kept its state in a bbolt file, DataDir/signal.db:
//
//	names             name -> 32-byte Ed25519 identity key
//	enc_keys          name -> 32-byte X25519 key + 64-byte binding signature
//	last_seen         name -> 8-byte big-endian unix ms
//	offline/<to>      sequence -> JSON {from, sealed}
//	offline_receipts/<sender>  sequence -> JSON {by, id}
//
// At the first start with NATS, migrate copies all of it into the users
// bucket and the mail and receipt streams, then renames the file to
// signal.db.migrated (kept as a backup). Names that already exist in the
// bucket are left alone; migrated names count as used (they never
// expire as throwaways). A run cut short is repeated at the next start:
// messages stored twice are shown once (clients drop duplicate ids).

var (
	boltNames    = []byte("names")
	boltEncKeys  = []byte("enc_keys")
	boltLastSeen = []byte("last_seen")
	boltOffline  = []byte("offline")
	boltReceipts = []byte("offline_receipts")
)

// migrate imports DataDir/signal.db, if there is one.
func (s *Server) migrate() error {
	if s.cfg.DataDir == "" {
		return nil
	}
	path := filepath.Join(s.cfg.DataDir, "signal.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("signal: migrate %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var n migrateCounts
	err = db.View(func(tx *bolt.Tx) error { return s.migrateTx(ctx, tx, &n) })
	db.Close()
	if err != nil {
		return fmt.Errorf("signal: migrate %s: %w", path, err)
	}
	to := path + ".migrated"
	if err := os.Rename(path, to); err != nil {
		return fmt.Errorf("signal: migrate: keep %s as %s: %w", path, to, err)
	}
	s.log.Info("signal: migrated the bbolt store into NATS", "names", n.names, "messages", n.messages,
		"receipts", n.receipts, "skipped", n.skipped, "backup", to)
	return nil
}

type migrateCounts struct{ names, messages, receipts, skipped int }

func (s *Server) migrateTx(ctx context.Context, tx *bolt.Tx, n *migrateCounts) error {
	now := time.Now().UnixMilli()
	if b := tx.Bucket(boltNames); b != nil {
		enc, seen := tx.Bucket(boltEncKeys), tx.Bucket(boltLastSeen)
		err := b.ForEach(func(k, v []byte) error {
			name := string(k)
			if proto.ValidateName(name) != nil || len(v) != ed25519.PublicKeySize {
				n.skipped++
				return nil
			}
			rec := userRec{Key: append([]byte(nil), v...), Reg: now, Used: true}
			if enc != nil {
				if e := enc.Get(k); len(e) == proto.EncKeySize+ed25519.SignatureSize {
					rec.EncKey = append([]byte(nil), e[:proto.EncKeySize]...)
					rec.EncSig = append([]byte(nil), e[proto.EncKeySize:]...)
				}
			}
			if seen != nil {
				if t := seen.Get(k); len(t) == 8 {
					rec.Seen = int64(binary.BigEndian.Uint64(t))
				}
			}
			data, _ := json.Marshal(&rec)
			_, err := s.st.users.Create(ctx, nkey(name), data)
			switch {
			case err == nil:
				n.names++
			case errors.Is(err, jetstream.ErrKeyExists):
				n.skipped++
			default:
				return fmt.Errorf("name %s: %w", name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	cutoff := time.Now().Add(-s.cfg.Offline.MaxAge).UnixMilli()
	if root := tx.Bucket(boltOffline); root != nil {
		err := root.ForEach(func(to, _ []byte) error {
			b := root.Bucket(to)
			if b == nil || proto.ValidateName(string(to)) != nil {
				return nil
			}
			return b.ForEach(func(_, v []byte) error {
				var r stored
				if json.Unmarshal(v, &r) != nil || proto.ValidateName(r.From) != nil || r.Sealed.Stored < cutoff {
					n.skipped++
					return nil
				}
				m := nats.NewMsg(mailSubject(string(to), r.From))
				m.Data = append([]byte(nil), v...)
				m.Header.Set(jetstream.MsgIDHeader, string(to)+"/"+r.From+"/"+r.Sealed.ID)
				if _, err := s.st.js.PublishMsg(ctx, m); err != nil {
					return fmt.Errorf("message for %s: %w", to, err)
				}
				n.messages++
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	if root := tx.Bucket(boltReceipts); root != nil {
		err := root.ForEach(func(sender, _ []byte) error {
			b := root.Bucket(sender)
			if b == nil || proto.ValidateName(string(sender)) != nil {
				return nil
			}
			return b.ForEach(func(_, v []byte) error {
				var r receiptRec
				if json.Unmarshal(v, &r) != nil || proto.ValidateName(r.By) != nil || proto.ValidateID(r.ID) != nil {
					n.skipped++
					return nil
				}
				data, _ := json.Marshal(&r) // Refused (a refusing receipt) carries over
				if _, err := s.st.js.Publish(ctx, rcptSubject(string(sender)), data); err != nil {
					return fmt.Errorf("receipt for %s: %w", sender, err)
				}
				n.receipts++
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}
