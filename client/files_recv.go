package client

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// The receiving data path: bytes arrive on pion's goroutine for the
// file's data channel and go straight to the temporary file and the
// running SHA-256, under the transfer's lock; the loop only hears when
// the file is complete (or broken).

// hashState is a running SHA-256 whose state can be saved and restored
// (crypto/sha256 implements encoding.BinaryMarshaler), so a restarted
// receiver goes on hashing where it stopped instead of reading its
// partial file again.
type hashState struct{ h hash.Hash }

func newHashState() hashState { return hashState{sha256.New()} }

func (s hashState) marshal() []byte {
	b, _ := s.h.(encoding.BinaryMarshaler).MarshalBinary()
	return b
}

func restoreHashState(b []byte) (hashState, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err != nil {
		return hashState{}, err
	}
	return hashState{h}, nil
}

// sumHex is the SHA-256 of the bytes written so far (Sum leaves the state alone).
func (s hashState) sumHex() string { return hex.EncodeToString(s.h.Sum(nil)) }

// filesWatchLink takes the file channels l's peer opens (link hook). The
// message handler is set here, before pion delivers the first message.
func (c *Client) filesWatchLink(l *link) {
	l.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		id, ok := proto.FileChannelID(dc.Label())
		t := c.files.get(id)
		if !ok || t == nil || t.rec.Out || t.rec.Peer != l.peer {
			c.log.Debug("client: refusing data channel", "peer", l.peer, "label", dc.Label())
			dc.Close()
			return
		}
		dc.OnMessage(func(m webrtc.DataChannelMessage) { c.onFileData(t, dc, m) })
	})
}

// onFileData takes one message from a file channel (pion's goroutine).
func (c *Client) onFileData(t *transfer, dc *webrtc.DataChannel, m webrtc.DataChannelMessage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rec.State != FileActive || t.part == nil {
		return
	}
	now := time.Now()
	have := t.rec.Offset + t.unsynced
	if m.IsString {
		h, err := proto.DecodeFileHeader(m.Data)
		if err != nil || h.ID != t.rec.ID || h.Offset > have {
			// A gap (or nonsense): drop this channel and ask again.
			c.log.Warn("client: bad file channel header", "id", t.rec.ID, "have", have, "err", err)
			go dc.Close()
			c.box.post(func() { c.askForBytes(t) })
			return
		}
		if h.Reset && have > 0 {
			c.log.Info("client: sender's bytes differ from ours: starting over", "id", t.rec.ID, "had", have)
			if err := c.resetPartLocked(t); err != nil {
				c.failReceiveLocked(t, proto.CodeInternal, "cannot rewrite the partial file: "+err.Error())
				return
			}
			have = 0
		}
		if old := t.dc; old != nil && old != dc {
			go old.Close()
		}
		t.dc, t.skip, t.lastData = dc, have-h.Offset, now
		if have == t.rec.File.Size {
			c.finishReceiveLocked(t)
		}
		return
	}
	if dc != t.dc {
		return // an older channel's tail, or bytes before a header
	}
	data := m.Data
	if t.skip > 0 {
		n := min(t.skip, int64(len(data)))
		data, t.skip = data[n:], t.skip-n
	}
	if len(data) == 0 {
		return
	}
	if have+int64(len(data)) > t.rec.File.Size {
		c.failReceiveLocked(t, proto.CodeBadRequest, fmt.Sprintf("the sender sent more than the %d bytes offered", t.rec.File.Size))
		return
	}
	if _, err := t.part.Write(data); err != nil {
		c.failReceiveLocked(t, proto.CodeInternal, "cannot write the file: "+err.Error())
		return
	}
	t.hash.h.Write(data)
	t.unsynced += int64(len(data))
	t.lastData = now
	switch {
	case have+int64(len(data)) == t.rec.File.Size:
		c.finishReceiveLocked(t)
	case t.unsynced >= fileSyncBytes || now.Sub(t.lastSync) >= fileSyncEvery:
		if err := c.syncPartLocked(t); err != nil {
			c.failReceiveLocked(t, proto.CodeInternal, "cannot write the file: "+err.Error())
		}
	}
}

// syncPartLocked makes the bytes written so far durable and records how
// far they go (with the hash state after them): a restart resumes here.
func (c *Client) syncPartLocked(t *transfer) error {
	t.lastSync = time.Now()
	if t.unsynced == 0 {
		return nil
	}
	if err := t.part.Sync(); err != nil {
		return err
	}
	t.rec.Offset += t.unsynced
	t.unsynced = 0
	t.rec.HashState = t.hash.marshal()
	return c.files.store.save(&t.rec)
}

// resetPartLocked empties the partial file and the hash.
func (c *Client) resetPartLocked(t *transfer) error {
	if err := t.part.Truncate(0); err != nil {
		return err
	}
	if _, err := t.part.Seek(0, io.SeekStart); err != nil {
		return err
	}
	t.hash, t.rec.Offset, t.unsynced, t.rec.HashState = newHashState(), 0, 0, nil
	return c.files.store.save(&t.rec)
}

// finishReceiveLocked checks the whole file's SHA-256 and saves it in the
// download folder; the loop then tells the sender.
func (c *Client) finishReceiveLocked(t *transfer) {
	err := t.part.Sync()
	if cerr := t.part.Close(); err == nil {
		err = cerr
	}
	t.part = nil
	t.rec.Offset += t.unsynced
	t.unsynced = 0
	if err != nil {
		c.failReceiveLocked(t, proto.CodeInternal, "cannot write the file: "+err.Error())
		return
	}
	if got := t.hash.sumHex(); got != t.rec.File.SHA256 {
		c.failReceiveLocked(t, proto.CodeHashMismatch, fmt.Sprintf("%s arrived with SHA-256 %s…, not the %s… offered; it was not kept", t.rec.File.Name, got[:12], t.rec.File.SHA256[:12]))
		return
	}
	dest, err := saveUnique(t.rec.Part, c.cfg.Files.Dir, t.rec.File.Name)
	if err != nil {
		c.failReceiveLocked(t, proto.CodeInternal, "cannot save the file: "+err.Error())
		return
	}
	t.rec.Saved, t.rec.Part = dest, ""
	c.log.Info("client: file received", "id", t.rec.ID, "from", t.rec.Peer, "saved", dest, "bytes", t.rec.File.Size)
	c.box.post(func() { c.endTransfer(t, FileDone, "", "", true) })
}

// failReceiveLocked ends t from the data path: the loop records it,
// deletes the partial file and tells the sender.
func (c *Client) failReceiveLocked(t *transfer, code proto.Code, reason string) {
	if t.part != nil {
		t.part.Close()
		t.part = nil
	}
	if t.dc != nil {
		go t.dc.Close()
		t.dc = nil
	}
	c.box.post(func() { c.endTransfer(t, FileFailed, code, reason, true) })
}

// saveUnique moves part into dir under the safe form of name, adding
// " (1)", " (2)"… before the extension while the name is taken. It never
// replaces a file: the name is claimed with a hard link (or an exclusive
// create) that fails if it exists.
func saveUnique(part, dir, name string) (string, error) {
	base := proto.SafeFileName(name)
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	if stem == "" {
		stem, ext = base, ""
	}
	os.Chmod(part, 0o644)
	for i := 0; i < maxNameAttempts; i++ {
		cand := base
		if i > 0 {
			suffix := fmt.Sprintf(" (%d)%s", i, ext)
			s := stem
			for len(s)+len(suffix) > proto.MaxFileNameLen {
				s = s[:len(s)-1]
			}
			cand = proto.SafeFileName(s + suffix)
		}
		dest := filepath.Join(dir, cand)
		if filepath.Dir(dest) != filepath.Clean(dir) {
			return "", fmt.Errorf("client: %q is not a plain file name", cand) // SafeFileName's invariant
		}
		err := os.Link(part, dest)
		if err == nil {
			os.Remove(part)
			return dest, nil
		}
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		// No hard links here: claim the name, then rename over the claim.
		f, err := os.OpenFile(dest, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		f.Close()
		if err := os.Rename(part, dest); err != nil {
			os.Remove(dest)
			return "", err
		}
		return dest, nil
	}
	return "", fmt.Errorf("client: %d files named like %q already", maxNameAttempts, base)
}

// reopenPart picks up an accepted transfer after a restart: the partial
// file cut back to the recorded offset and the hash state restored, or a
// fresh start if either is missing.
func (c *Client) reopenPart(t *transfer) error {
	r := &t.rec
	if c.cfg.Files.Dir == "" {
		return errors.New("no download folder any more")
	}
	if r.Part == "" {
		r.Part = filepath.Join(c.cfg.Files.Dir, partPrefix+r.ID+partSuffix)
	}
	f, err := os.OpenFile(r.Part, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	h := newHashState()
	if r.Offset > 0 {
		st, serr := f.Stat()
		rh, herr := restoreHashState(r.HashState)
		if serr == nil && herr == nil && st.Size() >= r.Offset {
			h = rh
		} else {
			c.log.Warn("client: partial file lost, starting over", "id", r.ID)
			r.Offset, r.HashState = 0, nil
		}
	}
	if err := f.Truncate(r.Offset); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Seek(r.Offset, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	t.part, t.hash, t.lastData = f, h, time.Now()
	return nil
}
