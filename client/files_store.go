package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-voice/parley/proto"
)

// Transfer states, as kept on disk and shown in Transfers.
const (
	FileOffered  = "offered"  // offered, not yet accepted or declined
	FileActive   = "active"   // accepted: bytes flow (or wait for a path)
	FileDone     = "done"     // the whole file arrived and its SHA-256 matched
	FileDeclined = "declined" // the receiver refused it
	FileFailed   = "failed"   // ended without the file (Code, Reason)
)

func finalFileState(s string) bool { return s == FileDone || s == FileDeclined || s == FileFailed }

// fileRecord is what survives a restart of one transfer: a small JSON
// file per transfer in FileConfig.StateDir, replaced atomically
// (write, fsync, rename) on every change of state and, while bytes
// arrive, about once a second after the bytes it counts are synced.
type fileRecord struct {
	ID    string         `json:"id"`
	Peer  string         `json:"peer"`
	Out   bool           `json:"out"` // we send
	File  proto.FileInfo `json:"file"`
	State string         `json:"state"`
	// Source is the file we send (Out).
	Source string `json:"source,omitempty"`
	// Part is the temporary file bytes are written to, Saved where the
	// finished file was put (in).
	Part  string `json:"part,omitempty"`
	Saved string `json:"saved,omitempty"`
	// Offset counts the bytes of Part that are written, synced and
	// hashed; HashState is the SHA-256 state after them
	// (encoding.BinaryMarshaler of crypto/sha256), so a restart resumes
	// hashing where it stopped.
	Offset    int64      `json:"offset,omitempty"`
	HashState []byte     `json:"hash_state,omitempty"`
	Code      proto.Code `json:"code,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Created   int64      `json:"created"` // unix ms
	Updated   int64      `json:"updated"` // unix ms
}

// fileStore keeps records in a folder; a nil store (no StateDir) keeps nothing.
type fileStore struct{ dir string }

// keepFinal is how long records of finished transfers are kept: a peer
// that comes back after a restart still learns how its transfer ended.
const keepFinal = 7 * 24 * time.Hour

func openFileStore(dir string) (*fileStore, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: file state folder: %w", err)
	}
	return &fileStore{dir: dir}, nil
}

func (s *fileStore) path(id string) string { return filepath.Join(s.dir, id+".json") }

// save writes r durably.
func (s *fileStore) save(r *fileRecord) error {
	if s == nil {
		return nil
	}
	r.Updated = time.Now().UnixMilli()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := s.path(r.ID) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("client: save transfer %s: %w", r.ID, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(r.ID))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("client: save transfer %s: %w", r.ID, err)
	}
	return nil
}

// load reads every record, dropping (and deleting) finished ones older
// than keepFinal and any that do not parse.
func (s *fileStore) load() ([]*fileRecord, error) {
	if s == nil {
		return nil, nil
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("client: read file state: %w", err)
	}
	var out []*fileRecord
	now := time.Now()
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		p := filepath.Join(s.dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r fileRecord
		if json.Unmarshal(b, &r) != nil || proto.ValidateID(r.ID) != nil || r.ID+".json" != name || r.File.Validate() != nil {
			os.Remove(p)
			continue
		}
		if finalFileState(r.State) && now.Sub(time.UnixMilli(r.Updated)) > keepFinal {
			os.Remove(p)
			continue
		}
		out = append(out, &r)
	}
	return out, nil
}
