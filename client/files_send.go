package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"
)

// The sending data path: one goroutine per attempt opens the file's data
// channel on the link, sends the header and then the bytes, keeping the
// channel's buffered amount between a low-water and a high-water mark
// (the receiver's pace comes back through SCTP's window) and under the
// rate fileRate allows (a relayed path's budget).

// sendRun is one attempt to send a file from offset.
type sendRun struct {
	offset  int64 // first byte of this attempt (0 after a reset)
	started time.Time
	cancel  context.CancelFunc
	lim     *rate.Limiter
	sent    atomic.Int64 // bytes handed to the channel
	dc      atomic.Pointer[webrtc.DataChannel]
	rate    atomic.Uint64 // bytes/s as float64 bits (0: unlimited)
}

// errPermanent marks an attempt's failure that no retry can mend (the
// source file changed or went away).
var errPermanent = errors.New("permanent")

func (r *sendRun) stop() {
	r.cancel()
	if dc := r.dc.Load(); dc != nil {
		go dc.Close()
	}
}

// progress is how many bytes SCTP has taken off our hands.
func (r *sendRun) progress() int64 {
	n := r.offset + r.sent.Load()
	if dc := r.dc.Load(); dc != nil {
		n -= int64(dc.BufferedAmount())
	}
	return max(n, r.offset)
}

// setRate paces the attempt at bps bytes per second (0: unpaced).
func (r *sendRun) setRate(bps float64) {
	if math.Float64bits(bps) == r.rate.Load() {
		return
	}
	r.rate.Store(math.Float64bits(bps))
	if bps <= 0 {
		r.lim.SetLimit(rate.Inf)
		return
	}
	r.lim.SetLimit(rate.Limit(bps))
}

// chunk is the message size at the current pace: small messages when
// paced slowly, so the relay sees a smooth flow rather than bursts.
func (r *sendRun) chunk() int {
	if bps := math.Float64frombits(r.rate.Load()); bps > 0 && bps < 1e6 {
		return fileSmallChunk
	}
	return fileChunk
}

// startSend starts an attempt for t's pending accept on its peer's link,
// replacing a running one (loop goroutine).
func (c *Client) startSend(t *transfer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	req := t.pending
	if req == nil || finalFileState(t.rec.State) {
		return
	}
	l := c.links[t.rec.Peer]
	if l == nil || !l.dcOpen {
		c.ensureLink(t.rec.Peer) // started when the link opens (filesLinkOpen)
		return
	}
	t.pending = nil
	if old := t.run; old != nil {
		old.stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &sendRun{offset: req.offset, started: time.Now(), cancel: cancel, lim: rate.NewLimiter(rate.Inf, fileChunk)}
	r.setRate(c.fileRate(l))
	if req.offset > 0 {
		t.resumed++
	}
	t.run = r
	t.lastProgress, t.lastBytes = time.Time{}, req.offset
	c.log.Info("client: sending file", "id", t.rec.ID, "to", t.rec.Peer, "from_byte", req.offset, "size", t.rec.File.Size)
	go func() {
		err := c.pushFile(ctx, t, r, l, req.hash)
		if err != nil && ctx.Err() == nil {
			c.box.post(func() { c.sendEnded(t, r, err) })
		}
	}()
}

// sendEnded handles an attempt that stopped early (loop goroutine). A
// lost channel waits for the receiver to ask again; a source file that
// changed or vanished ends the transfer.
func (c *Client) sendEnded(t *transfer, r *sendRun, err error) {
	t.mu.Lock()
	if t.run == r {
		t.run = nil
	}
	t.mu.Unlock()
	if errors.Is(err, errPermanent) {
		c.endTransfer(t, FileFailed, proto.CodeCancelled, err.Error(), true)
		return
	}
	c.log.Info("client: file attempt ended; waiting for the receiver to ask again", "id", t.rec.ID, "err", err)
}

// pushFile is one attempt: it returns nil once every byte is handed to
// the channel (the receiver's done ends the transfer).
func (c *Client) pushFile(ctx context.Context, t *transfer, r *sendRun, l *link, prefixHash string) error {
	t.mu.Lock()
	src, info, id := t.rec.Source, t.rec.File, t.rec.ID
	t.mu.Unlock()
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("%w: %s can no longer be read: %v", errPermanent, info.Name, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != info.Size {
		return fmt.Errorf("%w: %s changed since it was offered", errPermanent, info.Name)
	}
	offset, reset := r.offset, false
	if offset > 0 {
		h := sha256.New()
		if _, err := io.CopyN(h, f, offset); err != nil {
			return fmt.Errorf("%w: %s changed since it was offered", errPermanent, info.Name)
		}
		if hex.EncodeToString(h.Sum(nil)) != prefixHash {
			c.log.Info("client: receiver's bytes differ from ours: sending from the start", "id", id, "offset", offset)
			offset, reset = 0, true
			t.mu.Lock()
			r.offset = 0
			t.mu.Unlock()
		}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	dc, err := openFileChannel(ctx, l, id)
	if err != nil {
		return err
	}
	r.dc.Store(dc)
	closed := make(chan struct{})
	var once sync.Once
	dc.OnClose(func() { once.Do(func() { close(closed) }) })
	low := make(chan struct{}, 1)
	dc.SetBufferedAmountLowThreshold(fileBufLow)
	dc.OnBufferedAmountLow(func() {
		select {
		case low <- struct{}{}:
		default:
		}
	})
	hdr, _ := json.Marshal(&proto.FileHeader{ID: id, Offset: offset, Reset: reset})
	if err := dc.SendText(string(hdr)); err != nil {
		return err
	}
	buf := make([]byte, fileChunk)
	for pos := offset; pos < info.Size; {
		n := int(min(int64(r.chunk()), info.Size-pos))
		if _, err := io.ReadFull(f, buf[:n]); err != nil {
			return fmt.Errorf("%w: %s changed while it was sent: %v", errPermanent, info.Name, err)
		}
		for dc.BufferedAmount() > fileBufHigh {
			select {
			case <-low:
			case <-closed:
				return errors.New("client: file channel closed")
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond): // a missed low-water signal
			}
		}
		if err := r.lim.WaitN(ctx, n); err != nil {
			return err
		}
		if err := dc.Send(buf[:n]); err != nil {
			return err
		}
		r.sent.Add(int64(n))
		t.sentTotal.Add(int64(n))
		pos += int64(n)
	}
	return nil
}

// openFileChannel opens transfer id's data channel on l and waits for it.
func openFileChannel(ctx context.Context, l *link, id string) (*webrtc.DataChannel, error) {
	ordered, protocol := true, proto.FileChannelProtocol
	dc, err := l.pc.CreateDataChannel(proto.FileChannelLabel(id), &webrtc.DataChannelInit{Ordered: &ordered, Protocol: &protocol})
	if err != nil {
		return nil, fmt.Errorf("client: file channel: %w", err)
	}
	open := make(chan struct{})
	var once sync.Once
	dc.OnOpen(func() { once.Do(func() { close(open) }) })
	if dc.ReadyState() == webrtc.DataChannelStateOpen {
		once.Do(func() { close(open) })
	}
	select {
	case <-open:
		return dc, nil
	case <-ctx.Done():
		dc.Close()
		return nil, ctx.Err()
	case <-time.After(fileOpenTimeout):
		dc.Close()
		return nil, errors.New("client: file channel did not open")
	}
}
