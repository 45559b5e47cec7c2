package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
)

// File transfer (proto/files.go has the wire protocol and its flow).
//
// A file is offered as a chat message (so the offer reaches an offline
// recipient sealed, like any message) and sent, once accepted, over a data
// channel of its own on the peer connection the two already share: direct
// when the path is direct, through a supernode when it is relayed — which
// then carries DTLS ciphertext only. The receiver writes to a temporary
// file, records how far it got (synced) about once a second, checks the
// SHA-256 of the whole file, and renames it into its download folder under
// a safe name. A transfer cut by a lost path, a relay failover or a
// restart of either side resumes from the receiver's last recorded byte.
//
// The loop goroutine owns the transfers' control state; the receiving
// data path runs on pion's goroutine for the file's data channel, the
// sending one on a goroutine per attempt (files_send.go, files_recv.go).
// Both lock the transfer.

// FileConfig configures file transfer. The zero value sends files but
// declines every offer (no download folder).
type FileConfig struct {
	// Dir is the download folder. Received files are saved directly in
	// it, under proto.SafeFileName of the offered name (" (1)", " (2)"…
	// added when the name is taken); bytes in flight go to a hidden
	// ".parley-ID.part" file beside them. Empty declines every offer.
	Dir string
	// StateDir keeps one small JSON record per transfer, so transfers
	// resume after either side restarts. Empty keeps them in memory only.
	StateDir string
	// MaxSize is the largest file accepted; larger offers are declined
	// with too_large. Zero means 4 GiB.
	MaxSize int64
	// AutoAccept, when set, is asked about each offer that fits MaxSize;
	// true accepts it at once (the FileOfferEvent says so).
	AutoAccept func(from string, f proto.FileInfo) bool
	// MaxRate caps each outgoing transfer, in bytes per second. Zero
	// means no cap but the path's: a relayed transfer stays under the
	// supernode's per-session budget, well under it while a call is up.
	MaxRate float64
}

// DefaultMaxFileSize is FileConfig.MaxSize's zero value.
const DefaultMaxFileSize = 4 << 30

// Events of file transfer. Each has its public (JSON-mode) name and its
// JSON shape here, where it is defined.

// FileOfferEvent: Peer offers us a file. Answer with AcceptFile or
// DeclineFile; Auto says it was accepted already (FileConfig.AutoAccept).
type FileOfferEvent struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Type   string `json:"type,omitempty"`
	SHA256 string `json:"sha256"`
	Auto   bool   `json:"auto,omitempty"`
}

// FileProgressEvent: about once a second while bytes flow.
type FileProgressEvent struct {
	ID        string  `json:"id"`
	Peer      string  `json:"peer"`
	Direction string  `json:"direction"` // "send" or "receive"
	Bytes     int64   `json:"bytes"`     // acknowledged (send) or written (receive) so far
	Size      int64   `json:"size"`
	Rate      float64 `json:"rate"`  // bytes per second over the last interval
	ETA       float64 `json:"eta_s"` // seconds left at that rate (0 when unknown)
	Path      string  `json:"path"`  // "direct" or "relay"
	Via       string  `json:"via,omitempty"`
}

// FileDoneEvent: the file arrived whole and its SHA-256 matched (for the
// sender: the receiver said so).
type FileDoneEvent struct {
	ID        string `json:"id"`
	Peer      string `json:"peer"`
	Direction string `json:"direction"`
	Name      string `json:"name"`           // the offered name
	File      string `json:"file,omitempty"` // where it is on this machine (saved, or the source sent)
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	// Sent counts the file's bytes this process put on data channels,
	// over every attempt (send): more than Size when an attempt was cut
	// and resumed, never 2×Size for one resumed cut.
	Sent int64 `json:"sent_bytes,omitempty"`
	// Resumed counts attempts that started past byte 0.
	Resumed int `json:"resumed,omitempty"`
}

// FileFailedEvent: the transfer ended without the file. Code is
// declined, too_large, hash_mismatch, cancelled, or another proto code.
type FileFailedEvent struct {
	ID        string     `json:"id"`
	Peer      string     `json:"peer"`
	Direction string     `json:"direction"`
	Name      string     `json:"name"`
	Code      proto.Code `json:"code"`
	Reason    string     `json:"reason"`
}

func (FileOfferEvent) event()    {}
func (FileProgressEvent) event() {}
func (FileDoneEvent) event()     {}
func (FileFailedEvent) event()   {}

// EventName is the public name of the event in JSON mode.
func (FileOfferEvent) EventName() string    { return "file-offer" }
func (FileProgressEvent) EventName() string { return "file-progress" }
func (FileDoneEvent) EventName() string     { return "file-done" }
func (FileFailedEvent) EventName() string   { return "file-failed" }

// Transfer is one file transfer as Transfers lists it.
type Transfer struct {
	ID        string         `json:"id"`
	Peer      string         `json:"peer"`
	Direction string         `json:"direction"`
	File      proto.FileInfo `json:"file"`
	State     string         `json:"state"`
	Bytes     int64          `json:"bytes"`
	Saved     string         `json:"saved,omitempty"`
	Code      proto.Code     `json:"code,omitempty"`
	Reason    string         `json:"reason,omitempty"`
}

// Errors of the file API.
var (
	ErrNoTransfer = errors.New("client: no such file transfer")
	ErrNotAFile   = errors.New("client: not a regular file")
)

// Timing of transfers.
const (
	fileStall       = 10 * time.Second       // a receiver with no bytes this long asks again
	fileSyncEvery   = 500 * time.Millisecond // a receiver syncs and records its offset this often
	fileSyncBytes   = 64 << 20               // … or after this many bytes
	fileProgress    = time.Second            // progress events
	fileRelink      = 2 * time.Second        // how often a transfer waiting for a link asks for one
	fileDupAccept   = 5 * time.Second        // an accept for the running attempt's offset within this is a duplicate
	fileOpenTimeout = 20 * time.Second       // a file data channel must open within this
	fileBufHigh     = 2 << 20                // the sender waits while more than this is buffered (chat waits behind it) …
	fileBufLow      = 1 << 20                // … until it drains to this (low-water mark)
	fileChunk       = proto.MaxFileChunk     // bytes per message at full speed
	fileSmallChunk  = 8 << 10                // bytes per message when paced below 1 MB/s
	defaultRelayKbs = 1000                   // a relay's per-session budget when it does not say (supernode default)
	callAudioKbps   = 160                    // what a call's audio takes of a relay session, both ways
	relayShare      = 0.85                   // of the budget a transfer may use with no call up
	relayShareCall  = 0.5                    // … while a call is up
	fileReasonMax   = proto.MaxFileReason    // bytes of a reason sent to the peer
	partPrefix      = ".parley-"             // temporary files in the download folder
	partSuffix      = ".part"                //
	maxNameAttempts = 1000                   // " (1)" … " (999)"
	hashBuf         = 1 << 20                // read size when hashing a file
)

// transfer is one file transfer. mu guards everything below it; the
// loop goroutine and the data paths both take it.
type transfer struct {
	mu  sync.Mutex
	rec fileRecord

	// sender
	run       *sendRun   // the running attempt, nil if none
	pending   *acceptReq // an accept waiting for the link to open
	sentTotal atomic.Int64
	resumed   int

	// receiver: the data path, set once the transfer is accepted (or
	// reloaded active) and closed when it ends
	sink atomic.Pointer[recvSink]

	// Writes of rec to the store: the loop writes with mu held; the
	// receiver's sync goroutine writes a copy without it, so that the
	// fsyncs of checkpoints never hold up the loop. Each write takes a
	// number under mu; a copy older than the last one written is dropped.
	seq      uint64     // mu: the number of the newest copy of rec taken
	saveMu   sync.Mutex // serializes writes; taken after mu, or alone
	savedSeq uint64     // saveMu: the number of the newest copy written

	// both
	lastAsk      time.Time // receiver: last accept sent; sender: last re-sync offer
	lastProgress time.Time
	lastBytes    int64
}

type acceptReq struct {
	offset int64
	hash   string
}

// saveLocked writes t.rec to the store (t.mu held).
func (c *Client) saveLocked(t *transfer) error {
	t.seq++
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	t.savedSeq = t.seq
	return c.files.store.save(&t.rec)
}

func (t *transfer) direction() string {
	if t.rec.Out {
		return "send"
	}
	return "receive"
}

// files is the client's file transfer state.
type files struct {
	store *fileStore
	mu    sync.Mutex // guards byID (the data path looks transfers up)
	byID  map[string]*transfer
}

// initFiles loads the transfers a previous run left (New).
func (c *Client) initFiles() error {
	fc := &c.cfg.Files
	if fc.MaxSize == 0 {
		fc.MaxSize = DefaultMaxFileSize
	}
	if fc.Dir != "" {
		if err := os.MkdirAll(fc.Dir, 0o755); err != nil {
			return fmt.Errorf("%w: download folder: %v", ErrBadConfig, err)
		}
	}
	st, err := openFileStore(fc.StateDir)
	if err != nil {
		return err
	}
	c.files = &files{store: st, byID: map[string]*transfer{}}
	recs, err := st.load()
	if err != nil {
		return err
	}
	for _, r := range recs {
		t := &transfer{rec: *r}
		if !r.Out && r.State == FileActive {
			if err := c.reopenPart(t); err != nil {
				c.log.Warn("client: resume transfer", "id", r.ID, "err", err)
				t.rec.State, t.rec.Code, t.rec.Reason = FileFailed, proto.CodeInternal, err.Error()
				st.save(&t.rec)
			}
		}
		c.files.byID[r.ID] = t
	}
	return nil
}

// pendingOffers are the offers loaded from disk still awaiting an answer
// (emitted again at start, so a restarted UI can ask).
func (c *Client) pendingOffers() []Event {
	var out []Event
	for _, t := range c.files.sorted() {
		if !t.rec.Out && t.rec.State == FileOffered {
			out = append(out, offerEvent(&t.rec, false))
		}
	}
	return out
}

func (f *files) get(id string) *transfer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byID[id]
}

func (f *files) put(t *transfer) {
	f.mu.Lock()
	f.byID[t.rec.ID] = t
	f.mu.Unlock()
}

func (f *files) sorted() []*transfer {
	f.mu.Lock()
	out := make([]*transfer, 0, len(f.byID))
	for _, t := range f.byID {
		out = append(out, t)
	}
	f.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].rec.Created < out[j].rec.Created })
	return out
}

func offerEvent(r *fileRecord, auto bool) FileOfferEvent {
	return FileOfferEvent{ID: r.ID, From: r.Peer, Name: r.File.Name, Size: r.File.Size, Type: r.File.Type, SHA256: r.File.SHA256, Auto: auto}
}

// ---- the API ----

// SendFile offers the file at path to peer and returns the transfer's id.
// It reads the whole file once first (its SHA-256 goes in the offer). The
// offer reaches peer like a chat message — sealed through the server if
// peer is offline — and the bytes flow once peer accepts, with
// FileProgressEvents, then a FileDoneEvent or FileFailedEvent.
func (c *Client) SendFile(ctx context.Context, peer, path string) (string, error) {
	return c.SendFileNamed(ctx, peer, path, "")
}

// SendFileNamed is SendFile offering the file under name ("" means the
// file's own base name). The receiver saves it under a safe form of the
// name (proto.SafeFileName), whatever it holds.
func (c *Client) SendFileNamed(ctx context.Context, peer, path, name string) (string, error) {
	return c.SendFileID(ctx, peer, path, name, "")
}

// SendFileID is SendFileNamed under the caller's transfer id (a script's
// own, as SendID takes one for a message); "" picks a random one. The id
// is also the offer's message id, so it must be new: one a transfer
// already has is refused.
func (c *Client) SendFileID(ctx context.Context, peer, path, name, id string) (string, error) {
	if id == "" {
		id = randomID()
	} else if err := proto.ValidateID(id); err != nil {
		return "", err
	}
	if peer == c.cfg.Name {
		return "", ErrSelf
	}
	if err := proto.ValidateName(peer); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	info, err := describeFile(ctx, abs)
	if err != nil {
		return "", err
	}
	if name != "" {
		info.Name = name
		if err := info.Validate(); err != nil {
			return "", err
		}
	}
	err = c.do(ctx, func() error {
		if c.files.get(id) != nil {
			return proto.Errorf(proto.CodeBadRequest, "a transfer with id %q exists already", id)
		}
		now := time.Now().UnixMilli()
		t := &transfer{rec: fileRecord{ID: id, Peer: peer, Out: true, File: *info, State: FileOffered, Source: abs, Created: now}}
		if err := c.files.store.save(&t.rec); err != nil {
			return err
		}
		c.files.put(t)
		c.offerFile(t)
		return nil
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// describeFile stats, types and hashes the file at path.
func describeFile(ctx context.Context, path string) (*proto.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("client: send file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("client: send file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s", ErrNotAFile, path)
	}
	if st.Size() > proto.MaxFileSize {
		return nil, proto.Errorf(proto.CodeTooLarge, "%s is larger than %d bytes", path, int64(proto.MaxFileSize))
	}
	h := sha256.New()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	h.Write(head[:n])
	if err := copyCtx(ctx, h, f); err != nil {
		return nil, fmt.Errorf("client: hash %s: %w", path, err)
	}
	typ := mime.TypeByExtension(filepath.Ext(path))
	if typ == "" && n > 0 {
		typ = http.DetectContentType(head[:n])
	}
	if len(typ) > proto.MaxFileTypeLen {
		typ = ""
	}
	name := filepath.Base(path)
	if len(name) > proto.MaxFileNameLen {
		name = proto.SafeFileName(name)
	}
	info := &proto.FileInfo{Name: name, Size: st.Size(), Type: typ, SHA256: hex.EncodeToString(h.Sum(nil))}
	if err := info.Validate(); err != nil {
		info.Name = proto.SafeFileName(name)
		info.Type = ""
		if err := info.Validate(); err != nil {
			return nil, err
		}
	}
	return info, nil
}

// copyCtx copies r to w in hashBuf pieces, stopping when ctx is done.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) error {
	buf := make([]byte, hashBuf)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		w.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// AcceptFile accepts the offer id: bytes start to flow once a path to
// the sender is up.
func (c *Client) AcceptFile(ctx context.Context, id string) error {
	return c.answerOffer(ctx, id, c.acceptFile)
}

// answerOffer runs answer (loop goroutine) on the offer id that waits
// for our answer.
func (c *Client) answerOffer(ctx context.Context, id string, answer func(*transfer)) error {
	return c.do(ctx, func() error {
		t := c.files.get(id)
		if t == nil || t.rec.Out {
			return ErrNoTransfer
		}
		t.mu.Lock()
		state := t.rec.State
		t.mu.Unlock()
		if state != FileOffered {
			return fmt.Errorf("%w: transfer %s is %s", ErrNoTransfer, id, state)
		}
		answer(t)
		return nil
	})
}

// DeclineFile refuses the offer id; the sender gets code declined.
func (c *Client) DeclineFile(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "declined by " + c.cfg.Name
	}
	return c.answerOffer(ctx, id, func(t *transfer) { c.endTransfer(t, FileDeclined, proto.CodeDeclined, reason, true) })
}

// CancelFile stops transfer id (either direction); the peer gets code
// cancelled and a partial file is deleted.
func (c *Client) CancelFile(ctx context.Context, id string) error {
	return c.do(ctx, func() error {
		t := c.files.get(id)
		if t == nil {
			return ErrNoTransfer
		}
		t.mu.Lock()
		state := t.rec.State
		t.mu.Unlock()
		if finalFileState(state) {
			return fmt.Errorf("%w: transfer %s is %s", ErrNoTransfer, id, state)
		}
		c.endTransfer(t, FileFailed, proto.CodeCancelled, "cancelled by "+c.cfg.Name, true)
		return nil
	})
}

// Transfers lists every transfer the client knows, oldest first.
func (c *Client) Transfers(ctx context.Context) ([]Transfer, error) {
	var out []Transfer
	err := c.do(ctx, func() error {
		for _, t := range c.files.sorted() {
			t.mu.Lock()
			out = append(out, Transfer{ID: t.rec.ID, Peer: t.rec.Peer, Direction: t.direction(), File: t.rec.File,
				State: t.rec.State, Bytes: c.fileBytes(t), Saved: t.rec.Saved, Code: t.rec.Code, Reason: t.rec.Reason})
			t.mu.Unlock()
		}
		return nil
	})
	return out, err
}

// ---- control (loop goroutine) ----

// offerFile sends (or re-sends) the offer of t as a chat message.
func (c *Client) offerFile(t *transfer) {
	c.enqueue(&outMsg{OutMessage: OutMessage{ID: t.rec.ID, To: t.rec.Peer, Text: offerText(&t.rec.File), Time: t.rec.Created}, file: &t.rec.File})
}

// offerText is the words an offer shows to clients that know no files.
func offerText(f *proto.FileInfo) string {
	return fmt.Sprintf("📎 %s (%s)", f.Name, HumanBytes(f.Size))
}

// HumanBytes writes n as people read it: 912 B, 2.1 MB, 256.0 MiB is 268.4 MB.
func HumanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// fileOfferFor is the file a pending outgoing offer id carries (Resend).
func (c *Client) fileOfferFor(id string) *proto.FileInfo {
	if t := c.files.get(id); t != nil && t.rec.Out {
		return &t.rec.File
	}
	return nil
}

// sendFileCtl sends a FileControl to peer: on the chat data channel when
// it is open, else through the server (not stored: a peer that is offline
// hears it when the two re-sync).
func (c *Client) sendFileCtl(peer string, ctl *proto.FileControl) {
	if len(ctl.Reason) > fileReasonMax {
		ctl.Reason = ctl.Reason[:fileReasonMax]
	}
	if c.sendDC(peer, proto.DCFileMessage(ctl)) {
		return
	}
	if p, ok := c.presence[peer]; ok && p.Online() {
		c.sendSig(proto.TypeFile, peer, ctl)
		c.ensureLink(peer)
	}
}

// fileOffered handles an offer of file id from peer: the chat message
// that carries one, or a sender's re-sync (op offer). It is idempotent:
// a known id gets our current state back.
func (c *Client) fileOffered(from, id string, info proto.FileInfo) {
	if t := c.files.get(id); t != nil {
		if t.rec.Out || t.rec.Peer != from {
			return
		}
		c.replyState(t)
		return
	}
	now := time.Now().UnixMilli()
	t := &transfer{rec: fileRecord{ID: id, Peer: from, File: info, State: FileOffered, Created: now}}
	c.files.put(t)
	fc := &c.cfg.Files
	switch {
	case fc.Dir == "":
		c.events.push(offerEvent(&t.rec, false))
		c.endTransfer(t, FileDeclined, proto.CodeDeclined, c.cfg.Name+" takes no files here (no download folder)", true)
	case info.Size > fc.MaxSize:
		c.events.push(offerEvent(&t.rec, false))
		c.endTransfer(t, FileFailed, proto.CodeTooLarge,
			fmt.Sprintf("%s (%s) is over %s's limit of %s", info.Name, HumanBytes(info.Size), c.cfg.Name, HumanBytes(fc.MaxSize)), true)
	case fc.AutoAccept != nil && fc.AutoAccept(from, info):
		c.events.push(offerEvent(&t.rec, true))
		c.acceptFile(t)
	default:
		if err := c.files.store.save(&t.rec); err != nil {
			c.log.Warn("client: save offer", "id", id, "err", err)
		}
		c.events.push(offerEvent(&t.rec, false))
	}
}

// replyState answers a sender's re-sync with how t stands here.
func (c *Client) replyState(t *transfer) {
	t.mu.Lock()
	r := t.rec
	t.mu.Unlock()
	switch r.State {
	case FileActive:
		c.askForBytes(t)
	case FileDone:
		c.sendFileCtl(r.Peer, &proto.FileControl{Op: proto.FileOpDone, ID: r.ID})
	case FileDeclined:
		c.sendFileCtl(r.Peer, &proto.FileControl{Op: proto.FileOpDecline, ID: r.ID, Code: r.Code, Reason: r.Reason})
	case FileFailed:
		c.sendFileCtl(r.Peer, &proto.FileControl{Op: proto.FileOpFailed, ID: r.ID, Code: r.Code, Reason: r.Reason})
	}
}

// acceptFile starts receiving t into a fresh temporary file.
func (c *Client) acceptFile(t *transfer) {
	part := filepath.Join(c.cfg.Files.Dir, partPrefix+t.rec.ID+partSuffix)
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		c.endTransfer(t, FileFailed, proto.CodeInternal, "cannot write to the download folder: "+err.Error(), true)
		return
	}
	t.mu.Lock()
	t.rec.Part, t.rec.State, t.rec.Offset, t.rec.HashState = part, FileActive, 0, nil
	t.sink.Store(newRecvSink(c, t, f, newHashState(), 0))
	err = c.saveLocked(t)
	t.mu.Unlock()
	if err != nil {
		c.log.Warn("client: save transfer", "id", t.rec.ID, "err", err)
	}
	c.askForBytes(t)
}

// askForBytes (receiver) asks the sender for the bytes from our offset
// on: the sink's writer sends the accept once what it holds is written
// and hashed.
func (c *Client) askForBytes(t *transfer) {
	t.mu.Lock()
	s := t.sink.Load()
	if s == nil || t.rec.State != FileActive {
		t.mu.Unlock()
		return
	}
	t.lastAsk = time.Now()
	t.mu.Unlock()
	s.lastData.Store(time.Now().UnixNano())
	s.askFor()
}

// onFileCtl handles a FileControl from peer (data channel or server).
func (c *Client) onFileCtl(peer string, ctl *proto.FileControl) {
	if ctl.Op == proto.FileOpOffer {
		c.fileOffered(peer, ctl.ID, *ctl.File)
		return
	}
	t := c.files.get(ctl.ID)
	if t == nil || t.rec.Peer != peer {
		if ctl.Op == proto.FileOpAccept {
			// We know no such transfer (our state was lost): say so, so
			// the receiver stops asking.
			c.sendFileCtl(peer, &proto.FileControl{Op: proto.FileOpFailed, ID: ctl.ID, Code: proto.CodeNotFound, Reason: "the sender no longer has this transfer"})
		}
		return
	}
	t.mu.Lock()
	state, out := t.rec.State, t.rec.Out
	t.mu.Unlock()
	if finalFileState(state) {
		if out && ctl.Op == proto.FileOpAccept {
			c.replySenderState(t) // a receiver that missed how it ended
		}
		return
	}
	switch {
	case out && ctl.Op == proto.FileOpAccept:
		c.onAccept(t, ctl.Offset, ctl.Hash)
	case out && ctl.Op == proto.FileOpDone:
		c.endTransfer(t, FileDone, "", "", false)
	case out && ctl.Op == proto.FileOpDecline:
		code := ctl.Code
		if code == "" {
			code = proto.CodeDeclined
		}
		c.endTransfer(t, FileDeclined, code, orWords(ctl.Reason, "declined by "+peer), false)
	case ctl.Op == proto.FileOpFailed:
		code := ctl.Code
		if code == "" {
			code = proto.CodeCancelled
		}
		c.endTransfer(t, FileFailed, code, orWords(ctl.Reason, "failed at "+peer), false)
	}
}

// replySenderState tells a receiver how a transfer we sent ended.
func (c *Client) replySenderState(t *transfer) {
	t.mu.Lock()
	r := t.rec
	t.mu.Unlock()
	switch r.State {
	case FileFailed, FileDeclined:
		c.sendFileCtl(r.Peer, &proto.FileControl{Op: proto.FileOpFailed, ID: r.ID, Code: r.Code, Reason: r.Reason})
	}
}

func orWords(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// onAccept (sender) starts an attempt from offset, unless the same
// attempt is already running.
func (c *Client) onAccept(t *transfer, offset int64, hash string) {
	t.mu.Lock()
	if offset > t.rec.File.Size {
		t.mu.Unlock()
		c.endTransfer(t, FileFailed, proto.CodeBadRequest, fmt.Sprintf("asked for byte %d of a %d-byte file", offset, t.rec.File.Size), true)
		return
	}
	if r := t.run; r != nil && r.offset == offset && time.Since(r.started) < fileDupAccept {
		t.mu.Unlock()
		return // the accept that started it, again (re-sync and link-open both ask)
	}
	if t.rec.State != FileActive {
		t.rec.State = FileActive
		c.files.store.save(&t.rec)
	}
	t.pending = &acceptReq{offset: offset, hash: hash}
	t.mu.Unlock()
	c.startSend(t)
}

// endTransfer puts t in a final state, tells the peer (tell) and emits
// the event.
func (c *Client) endTransfer(t *transfer, state string, code proto.Code, reason string, tell bool) {
	t.mu.Lock()
	if finalFileState(t.rec.State) {
		t.mu.Unlock()
		return
	}
	t.rec.State, t.rec.Code, t.rec.Reason = state, code, reason
	if r := t.run; r != nil {
		r.stop()
		t.run = nil
	}
	t.pending = nil
	s := t.sink.Swap(nil)
	t.mu.Unlock()
	if s != nil {
		// Without t.mu: the writer's sync goroutine may take it meanwhile
		// (and, the state being final now, record nothing).
		if dc := s.dc.Swap(nil); dc != nil {
			go dc.Close()
		}
		s.close(false)
	}
	t.mu.Lock()
	if !t.rec.Out && state != FileDone && t.rec.Part != "" {
		os.Remove(t.rec.Part)
		t.rec.Part, t.rec.Offset, t.rec.HashState = "", 0, nil
	}
	rec := t.rec
	sent, resumed := t.sentTotal.Load(), t.resumed
	if err := c.saveLocked(t); err != nil {
		c.log.Warn("client: save transfer", "id", rec.ID, "err", err)
	}
	t.mu.Unlock()
	if tell {
		switch state {
		case FileDeclined:
			c.sendFileCtl(rec.Peer, &proto.FileControl{Op: proto.FileOpDecline, ID: rec.ID, Code: code, Reason: reason})
		case FileFailed:
			c.sendFileCtl(rec.Peer, &proto.FileControl{Op: proto.FileOpFailed, ID: rec.ID, Code: code, Reason: reason})
		case FileDone:
			c.sendFileCtl(rec.Peer, &proto.FileControl{Op: proto.FileOpDone, ID: rec.ID})
		}
	}
	dir := "receive"
	if rec.Out {
		dir = "send"
	}
	if state == FileDone {
		where := rec.Saved
		if rec.Out {
			where = rec.Source
		}
		c.events.push(FileDoneEvent{ID: rec.ID, Peer: rec.Peer, Direction: dir, Name: rec.File.Name, File: where,
			Size: rec.File.Size, SHA256: rec.File.SHA256, Sent: sent, Resumed: resumed})
		return
	}
	c.events.push(FileFailedEvent{ID: rec.ID, Peer: rec.Peer, Direction: dir, Name: rec.File.Name, Code: code, Reason: reason})
}

// ---- hooks from the link, chat and the tick (loop goroutine) ----

// filesLinkOpen runs when peer's chat data channel opens (a new link, or
// the first after a restart): the receiver asks for its bytes again, the
// sender re-syncs what the peer may have missed and starts attempts that
// waited for a path.
func (c *Client) filesLinkOpen(l *link) {
	for _, t := range c.files.sorted() {
		t.mu.Lock()
		peer, out, state, pending := t.rec.Peer, t.rec.Out, t.rec.State, t.pending
		t.mu.Unlock()
		if peer != l.peer || finalFileState(state) {
			continue
		}
		switch {
		case out && pending != nil:
			c.startSend(t)
		case out:
			t.mu.Lock()
			t.lastAsk = time.Now()
			file := t.rec.File
			t.mu.Unlock()
			c.sendFileCtl(peer, &proto.FileControl{Op: proto.FileOpOffer, ID: t.rec.ID, File: &file})
		case state == FileActive:
			c.askForBytes(t)
		}
	}
}

// filesTick (every loop tick): links for transfers that wait for one,
// receivers that stalled, progress, pacing.
func (c *Client) filesTick(now time.Time) {
	for _, t := range c.files.sorted() {
		t.mu.Lock()
		r := t.rec
		run := t.run
		stalled := false
		if s := t.sink.Load(); s != nil && !r.Out && r.State == FileActive {
			stalled = now.Sub(time.Unix(0, s.lastData.Load())) > fileStall && now.Sub(t.lastAsk) > fileStall
		}
		relink := now.Sub(t.lastAsk) > fileRelink
		t.mu.Unlock()
		if finalFileState(r.State) || r.State == FileOffered && !r.Out {
			continue
		}
		l := c.links[r.Peer]
		online := false
		if p, ok := c.presence[r.Peer]; ok && p.Online() {
			online = true
		}
		if (l == nil || !l.dcOpen) && online && relink {
			t.mu.Lock()
			t.lastAsk = now
			t.mu.Unlock()
			c.ensureLink(r.Peer)
			continue
		}
		if l == nil || !l.dcOpen {
			continue
		}
		if stalled {
			c.log.Info("client: transfer stalled, asking again", "id", r.ID, "peer", r.Peer)
			c.askForBytes(t)
		}
		if run != nil {
			run.setRate(c.fileRate(l))
		}
		c.fileProgress(t, l, now)
	}
}

// fileProgress emits t's progress about once a second while it moves.
func (c *Client) fileProgress(t *transfer, l *link, now time.Time) {
	t.mu.Lock()
	if t.rec.State != FileActive || now.Sub(t.lastProgress) < fileProgress {
		t.mu.Unlock()
		return
	}
	bytes := c.fileBytes(t)
	if t.rec.Out && t.run == nil || !t.rec.Out && (t.sink.Load() == nil || !t.sink.Load().moving()) {
		t.lastProgress, t.lastBytes = now, bytes
		t.mu.Unlock()
		return // no bytes move
	}
	dt := now.Sub(t.lastProgress).Seconds()
	rate := 0.0
	if !t.lastProgress.IsZero() && dt > 0 && bytes >= t.lastBytes {
		rate = float64(bytes-t.lastBytes) / dt
	}
	t.lastProgress, t.lastBytes = now, bytes
	ev := FileProgressEvent{ID: t.rec.ID, Peer: t.rec.Peer, Direction: t.direction(), Bytes: bytes, Size: t.rec.File.Size, Rate: rate}
	t.mu.Unlock()
	if rate > 0 {
		ev.ETA = float64(ev.Size-bytes) / rate
	}
	ev.Path, ev.Via, _, _ = pathOf(l)
	c.events.push(ev)
}

// fileBytes is how far t got: acknowledged by SCTP (send) or written
// (receive). t.mu is held.
func (c *Client) fileBytes(t *transfer) int64 {
	if !t.rec.Out {
		if t.rec.State == FileDone {
			return t.rec.File.Size
		}
		if s := t.sink.Load(); s != nil {
			return s.written.Load()
		}
		return t.rec.Offset
	}
	if t.rec.State == FileDone {
		return t.rec.File.Size
	}
	if r := t.run; r != nil {
		return r.progress()
	}
	return 0
}

// fileRate is how fast a transfer over l may send, in bytes per second
// (0: as fast as the path goes). A relayed path keeps under the relay's
// per-session budget — which a call on the same link shares — so the
// relay never has to drop the call's packets for the file's.
func (c *Client) fileRate(l *link) float64 {
	rate := c.cfg.Files.MaxRate
	path, via, _, _ := pathOf(l)
	if path != "relay" {
		return rate
	}
	kbps := c.relay.sessionKbps(via)
	callUp := false
	for _, k := range c.calls {
		if k.state == CallConnected || k.state == CallAccepted {
			callUp = true
		}
	}
	var relay float64
	switch {
	case callUp && kbps == 0:
		relay = (defaultRelayKbs*relayShareCall - callAudioKbps) * 1000 / 8
	case callUp:
		relay = (kbps*relayShareCall - callAudioKbps) * 1000 / 8
	case kbps > 0:
		relay = kbps * relayShare * 1000 / 8
	}
	if relay > 0 && relay < 4<<10 {
		relay = 4 << 10
	}
	if relay > 0 && (rate == 0 || relay < rate) {
		rate = relay
	}
	return rate
}

// sessionKbps is the per-session budget supernode id announced (0 if
// unknown).
func (r *relayer) sessionKbps(id string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sn := range r.list {
		if sn.ID == id {
			return sn.SessionKbps
		}
	}
	return 0
}

// filesShutdown stops every attempt (Run returning).
func (c *Client) filesShutdown() {
	for _, t := range c.files.sorted() {
		t.mu.Lock()
		if t.run != nil {
			t.run.stop()
			t.run = nil
		}
		s := t.sink.Load()
		t.mu.Unlock()
		if s == nil {
			continue
		}
		if ck := s.close(true); ck.ok {
			c.recordCheckpoint(s, ck)
		}
	}
}
