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
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// The receiving data path. Messages arrive on pion's goroutine for each
// of the transfer's data channels and go to a recvSink, which checks them
// against what it has, queues the bytes and returns: a slow disk never
// holds up pion's reading — which, through SCTP's receive window shared
// by every channel of the link, would hold up the chat too — until the
// queue (fileQueue messages) is full. The sink's writer goroutine writes
// the queue to the partial file and the running SHA-256; at checkpoints
// (fileSyncEvery, fileSyncBytes) it hands the offset and the hash state
// after it to a sync goroutine, which fsyncs the file while writing goes
// on and then has the loop record them: a restart resumes there. The
// writer also answers the loop's asks (an accept from the bytes it has
// written and hashed) and, once every byte is written, checks the
// SHA-256 and saves the file.

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

// fileQueue bounds the messages a receiving transfer holds in memory
// between pion and the disk (16 MiB of 64 KiB messages).
const fileQueue = 256

// sinkItem is one step for the writer, in channel order.
type sinkItem struct {
	data   []byte // bytes to write next (pion's copy, handed over)
	reset  bool   // start the file over (the sender's bytes differ)
	finish bool   // every byte is queued: check and save the file
}

// checkpoint is a synced offset and the hash state after it.
type checkpoint struct {
	offset int64
	state  []byte
	ok     bool // set: the bytes before offset are synced
}

// recvSink is the receiving data path of one transfer (see above).
type recvSink struct {
	c    *Client
	t    *transfer
	id   string
	peer string
	size int64
	sum  string // the SHA-256 offered
	name string // the name offered
	part string // the partial file's path
	f    *os.File

	q     chan sinkItem
	poke  chan struct{} // 1-buffered: the loop asked for something
	stop  chan struct{} // closed: the writer ends (keep says how)
	keep  atomic.Bool   // on stop, write what is queued and sync (shutdown), else drop it
	done  chan struct{} // closed when the writer has ended
	final checkpoint    // on stop with keep: where the file ends, synced (read after done)

	// The loop goroutine's.
	running bool // the writer was started
	closed  bool // stop is closed

	ask      atomic.Bool                        // the loop wants an accept from what is written
	dc       atomic.Pointer[webrtc.DataChannel] // the channel bytes are taken from; nil until a header
	lastData atomic.Int64                       // unix ns of the last message taken
	written  atomic.Int64                       // bytes written and hashed

	// The channels' callbacks; mu serializes them.
	mu       sync.Mutex
	accepted int64 // bytes taken from channels: written or queued
	skip     int64 // bytes to drop: a resent prefix we already have
	finished bool  // the finish item is queued

	// The writer goroutine's.
	hash     hashState
	unsynced int64
	lastSync time.Time
}

func newRecvSink(c *Client, t *transfer, f *os.File, h hashState, offset int64) *recvSink {
	s := &recvSink{c: c, t: t, id: t.rec.ID, peer: t.rec.Peer, size: t.rec.File.Size, sum: t.rec.File.SHA256,
		name: t.rec.File.Name, part: t.rec.Part, f: f,
		q: make(chan sinkItem, fileQueue), poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		accepted: offset, hash: h, lastSync: time.Now()}
	s.written.Store(offset)
	s.lastData.Store(time.Now().UnixNano())
	return s
}

// askFor has the writer send an accept from the bytes it has (loop
// goroutine): bytes count again from the next channel's header.
func (s *recvSink) askFor() {
	if s.closed {
		return
	}
	s.dc.Store(nil)
	s.ask.Store(true)
	if !s.running {
		s.running = true
		go s.run()
	}
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// moving says whether a channel feeds the sink.
func (s *recvSink) moving() bool { return s.dc.Load() != nil }

// close stops the writer and waits for it (loop goroutine); with keep,
// what is queued is written and synced first, and the checkpoint
// returned (ok unset if there is none to record: the writer never ran,
// had ended, or failed to sync).
func (s *recvSink) close(keep bool) checkpoint {
	if s.closed {
		return checkpoint{}
	}
	s.closed = true
	s.keep.Store(keep)
	close(s.stop)
	if !s.running {
		s.f.Close()
		return checkpoint{}
	}
	<-s.done
	return s.final
}

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
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			if s := t.sink.Load(); s != nil {
				s.onMessage(dc, m)
			}
		})
	})
}

// onMessage takes one message from a file channel (pion's goroutine).
func (s *recvSink) onMessage(dc *webrtc.DataChannel, m webrtc.DataChannelMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return
	default:
	}
	if s.finished {
		return
	}
	now := time.Now().UnixNano()
	if m.IsString {
		s.onHeader(dc, m.Data, now)
		return
	}
	if dc != s.dc.Load() {
		return // an older channel's tail, bytes before a header, or after an ask
	}
	data := m.Data
	if s.skip > 0 {
		n := min(s.skip, int64(len(data)))
		data, s.skip = data[n:], s.skip-n
	}
	if len(data) == 0 {
		return
	}
	if s.accepted+int64(len(data)) > s.size {
		s.fail(proto.CodeBadRequest, fmt.Sprintf("the sender sent more than the %d bytes offered", s.size))
		return
	}
	s.accepted += int64(len(data))
	s.lastData.Store(now)
	if !s.push(sinkItem{data: data}) {
		return
	}
	if s.accepted == s.size {
		s.finished = s.push(sinkItem{finish: true})
	}
}

// onHeader starts taking bytes from dc. s.mu is held.
func (s *recvSink) onHeader(dc *webrtc.DataChannel, data []byte, now int64) {
	h, err := proto.DecodeFileHeader(data)
	if err != nil || h.ID != s.id || h.Offset > s.accepted {
		// A gap (or nonsense): drop this channel and ask again.
		s.c.log.Warn("client: bad file channel header", "id", s.id, "have", s.accepted, "err", err)
		go dc.Close()
		s.c.box.post(func() { s.c.askForBytes(s.t) })
		return
	}
	if h.Reset && s.accepted > 0 {
		s.c.log.Info("client: sender's bytes differ from ours: starting over", "id", s.id, "had", s.accepted)
		if !s.push(sinkItem{reset: true}) {
			return
		}
		s.accepted = 0
	}
	if old := s.dc.Swap(dc); old != nil && old != dc {
		go old.Close()
	}
	s.skip = s.accepted - h.Offset
	s.lastData.Store(now)
	if s.accepted == s.size {
		s.finished = s.push(sinkItem{finish: true})
	}
}

// push queues it, waiting while the queue is full; false if the sink
// stopped meanwhile. s.mu is held.
func (s *recvSink) push(it sinkItem) bool {
	select {
	case s.q <- it:
		return true
	default:
	}
	select {
	case s.q <- it:
		return true
	case <-s.stop:
		return false
	}
}

// fail ends the transfer from the data path: the loop records it,
// deletes the partial file and tells the sender.
func (s *recvSink) fail(code proto.Code, reason string) {
	if dc := s.dc.Swap(nil); dc != nil {
		go dc.Close()
	}
	t := s.t
	s.c.box.post(func() { s.c.endTransfer(t, FileFailed, code, reason, true) })
}

// run is the writer goroutine.
func (s *recvSink) run() {
	defer close(s.done)
	timer := time.NewTimer(fileSyncEvery)
	timer.Stop()
	armed := false
	var syncing chan error // non-nil while a sync runs
	waitSync := func() error {
		if syncing == nil {
			return nil
		}
		err := <-syncing
		syncing = nil
		return err
	}
	for {
		select {
		case it := <-s.q:
			var err error
			switch {
			case it.finish:
				if err := waitSync(); err != nil {
					s.writeFailed(err)
					return
				}
				s.finish()
				return
			case it.reset:
				if err = waitSync(); err == nil {
					err = s.reset()
				}
			default:
				err = s.write(it.data)
			}
			if err != nil {
				waitSync()
				s.writeFailed(err)
				return
			}
		case err := <-syncing:
			syncing = nil
			if err != nil {
				s.writeFailed(err)
				return
			}
		case <-timer.C:
			armed = false
		case <-s.poke:
		case <-s.stop:
			err := waitSync()
			if s.keep.Load() {
				if s.final, err = s.drain(err); err != nil {
					s.c.log.Warn("client: sync partial file", "id", s.id, "err", err)
				}
			}
			s.f.Close()
			return
		}
		if s.ask.Swap(false) {
			s.sendAccept()
		}
		if s.unsynced > 0 && syncing == nil {
			if s.unsynced >= fileSyncBytes || time.Since(s.lastSync) >= fileSyncEvery {
				syncing = s.checkpoint()
			} else if !armed {
				timer.Reset(fileSyncEvery - time.Since(s.lastSync))
				armed = true
			}
		}
	}
}

// write appends data to the file and the hash (writer).
func (s *recvSink) write(data []byte) error {
	if _, err := s.f.Write(data); err != nil {
		return err
	}
	s.hash.h.Write(data)
	s.unsynced += int64(len(data))
	s.written.Add(int64(len(data)))
	return nil
}

// sendAccept asks the sender for the bytes after those written (writer).
func (s *recvSink) sendAccept() {
	ctl := &proto.FileControl{Op: proto.FileOpAccept, ID: s.id, Offset: s.written.Load()}
	if ctl.Offset > 0 {
		ctl.Hash = s.hash.sumHex()
	}
	peer := s.peer
	s.c.box.post(func() { s.c.sendFileCtl(peer, ctl) })
}

// checkpoint starts syncing what is written and records it once the
// sync is done, off the loop (writer).
func (s *recvSink) checkpoint() chan error {
	ck := checkpoint{offset: s.written.Load(), state: s.hash.marshal(), ok: true}
	s.unsynced, s.lastSync = 0, time.Now()
	done := make(chan error, 1)
	go func() {
		err := s.f.Sync()
		if err == nil {
			s.c.recordCheckpoint(s, ck)
		}
		done <- err
	}()
	return done
}

// drain writes what is queued and syncs it (writer, stopping with keep).
func (s *recvSink) drain(err error) (checkpoint, error) {
	for more := true; more && err == nil; {
		select {
		case it := <-s.q:
			switch {
			case it.reset:
				err = s.reset()
			case it.data != nil:
				err = s.write(it.data)
			}
		default:
			more = false
		}
	}
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		return checkpoint{}, err
	}
	s.unsynced = 0
	return checkpoint{offset: s.written.Load(), state: s.hash.marshal(), ok: true}, nil
}

// reset empties the partial file and the hash (writer).
func (s *recvSink) reset() error {
	if err := s.f.Truncate(0); err != nil {
		return err
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	s.hash, s.unsynced = newHashState(), 0
	s.written.Store(0)
	s.c.recordCheckpoint(s, checkpoint{ok: true})
	return nil
}

func (s *recvSink) writeFailed(err error) {
	s.f.Close()
	s.fail(proto.CodeInternal, "cannot write the file: "+err.Error())
}

// finish syncs the file, checks its SHA-256 and saves it in the download
// folder; the loop then tells the sender (writer).
func (s *recvSink) finish() {
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.fail(proto.CodeInternal, "cannot write the file: "+err.Error())
		return
	}
	t := s.t
	if got := s.hash.sumHex(); got != s.sum {
		s.fail(proto.CodeHashMismatch, fmt.Sprintf("%s arrived with SHA-256 %s…, not the %s… offered; it was not kept", s.name, got[:12], s.sum[:12]))
		return
	}
	dest, err := saveUnique(s.part, s.c.cfg.Files.Dir, s.name)
	if err != nil {
		s.fail(proto.CodeInternal, "cannot save the file: "+err.Error())
		return
	}
	s.dc.Store(nil)
	s.c.log.Info("client: file received", "id", s.id, "from", s.peer, "saved", dest, "bytes", s.size)
	s.c.box.post(func() {
		t.mu.Lock()
		t.rec.Saved, t.rec.Part, t.rec.Offset, t.rec.HashState = dest, "", s.size, nil
		t.mu.Unlock()
		s.c.endTransfer(t, FileDone, "", "", true)
	})
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
	t.sink.Store(newRecvSink(c, t, f, h, r.Offset))
	return nil
}

// recordCheckpoint records ck as how far s's transfer has synced bytes
// (any goroutine but the loop's holding t.mu).
func (c *Client) recordCheckpoint(s *recvSink, ck checkpoint) {
	t := s.t
	t.mu.Lock()
	if t.sink.Load() != s || t.rec.State != FileActive {
		t.mu.Unlock()
		return
	}
	t.rec.Offset, t.rec.HashState = ck.offset, ck.state
	t.seq++
	seq, rec := t.seq, t.rec
	t.mu.Unlock()
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	if t.savedSeq > seq {
		return // the loop wrote a newer state meanwhile
	}
	t.savedSeq = seq
	if err := c.files.store.save(&rec); err != nil {
		c.log.Warn("client: save transfer", "id", rec.ID, "err", err)
	}
}
