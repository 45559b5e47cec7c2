// Package dcbench measures the floor under Parley's file transfer: two
// bare pion peer connections in this process, one reliable ordered data
// channel between them, the sender keeping the channel's buffered amount
// between a low and a high water mark, the receiver counting bytes and
// doing nothing else. A file transfer over the same pion stack cannot go
// faster than this (client.BenchmarkFileTransfer, `parley bench files`).
package dcbench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"
)

// Config shapes a pair. Zero values take the defaults Parley's file
// transfer uses.
type Config struct {
	// Chunk is the message size; zero means 64 KiB.
	Chunk int
	// Low and High are the buffered amount's marks: the sender waits while
	// more than High is buffered until it drains to Low. Zero means 1 MiB
	// and 2 MiB.
	Low, High uint64
	// Detach reads the receiving channel detached (an io.Reader, no
	// per-message callback) instead of with OnMessage.
	Detach bool
	// RecvBuffer is SCTP's receive buffer; zero keeps pion's default (1 MiB).
	RecvBuffer uint32
	// Settings adjusts both sides' setting engine (e.g. client.LoopbackOnly).
	Settings func(*webrtc.SettingEngine)
}

// Pair is two connected peer connections and the channel between them.
type Pair struct {
	cfg      Config
	a, b     *webrtc.PeerConnection
	send     *webrtc.DataChannel
	got      atomic.Int64
	progress chan struct{} // 1-buffered: got moved
	drained  chan struct{} // 1-buffered: the sender's buffered amount fell to Low
	buf      []byte
}

// New connects a pair on whatever network cfg.Settings allows and waits
// for the channel to open.
func New(ctx context.Context, cfg Config) (*Pair, error) {
	if cfg.Chunk == 0 {
		cfg.Chunk = 64 << 10
	}
	if cfg.Low == 0 && cfg.High == 0 {
		cfg.Low, cfg.High = 1<<20, 2<<20
	}
	se := webrtc.SettingEngine{}
	if cfg.Settings != nil {
		cfg.Settings(&se)
	}
	if cfg.Detach {
		se.DetachDataChannels()
	}
	if cfg.RecvBuffer > 0 {
		se.SetSCTPMaxReceiveBufferSize(cfg.RecvBuffer)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	p := &Pair{cfg: cfg, progress: make(chan struct{}, 1), drained: make(chan struct{}, 1), buf: make([]byte, cfg.Chunk)}
	var err error
	if p.a, err = api.NewPeerConnection(webrtc.Configuration{}); err != nil {
		return nil, err
	}
	if p.b, err = api.NewPeerConnection(webrtc.Configuration{}); err != nil {
		p.a.Close()
		return nil, err
	}
	if err := p.connect(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Pair) connect(ctx context.Context) error {
	recvOpen := make(chan *webrtc.DataChannel, 1)
	p.b.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() { recvOpen <- dc })
	})
	ordered := true
	var err error
	if p.send, err = p.a.CreateDataChannel("dcbench", &webrtc.DataChannelInit{Ordered: &ordered}); err != nil {
		return err
	}
	sendOpen := make(chan struct{})
	p.send.OnOpen(func() { close(sendOpen) })
	p.send.SetBufferedAmountLowThreshold(p.cfg.Low)
	p.send.OnBufferedAmountLow(func() { signal(p.drained) })
	// Non-trickle: each side's description carries all its candidates.
	for _, step := range []func() error{
		func() error {
			return describe(p.a, func() (webrtc.SessionDescription, error) { return p.a.CreateOffer(nil) })
		},
		func() error { return p.b.SetRemoteDescription(*p.a.LocalDescription()) },
		func() error {
			return describe(p.b, func() (webrtc.SessionDescription, error) { return p.b.CreateAnswer(nil) })
		},
		func() error { return p.a.SetRemoteDescription(*p.b.LocalDescription()) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	var recv *webrtc.DataChannel
	for recv == nil {
		select {
		case recv = <-recvOpen:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Second):
			return errors.New("dcbench: the data channel did not open")
		}
	}
	select {
	case <-sendOpen:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !p.cfg.Detach {
		recv.OnMessage(func(m webrtc.DataChannelMessage) { p.count(len(m.Data)) })
		return nil
	}
	rw, err := recv.Detach()
	if err != nil {
		return err
	}
	if _, err := p.send.Detach(); err != nil { // pion: detach every channel or none
		return err
	}
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := rw.Read(buf)
			if err != nil {
				return // io.EOF or closed: the pair is closing
			}
			p.count(n)
		}
	}()
	return nil
}

// describe sets pc's local description from create once its candidates
// are gathered.
func describe(pc *webrtc.PeerConnection, create func() (webrtc.SessionDescription, error)) error {
	d, err := create()
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(d); err != nil {
		return err
	}
	<-gathered
	return nil
}

func (p *Pair) count(n int) {
	p.got.Add(int64(n))
	signal(p.progress)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Result is one measured send.
type Result struct {
	Bytes   int64
	Elapsed time.Duration // first byte handed to the channel to the last one received
	CPU     time.Duration // this process's CPU time meanwhile (both sides)
}

// MBps is the rate in megabytes (10^6) per second.
func (r Result) MBps() float64 { return float64(r.Bytes) / r.Elapsed.Seconds() / 1e6 }

// CPUPerMB is the CPU milliseconds spent per megabyte.
func (r Result) CPUPerMB() float64 {
	return float64(r.CPU) / float64(time.Millisecond) / (float64(r.Bytes) / 1e6)
}

// Send sends n bytes and waits until the receiver has them all.
func (p *Pair) Send(ctx context.Context, n int64) (Result, error) {
	want := p.got.Load() + n
	start, cpu0 := time.Now(), CPUTime()
	for sent := int64(0); sent < n; {
		for p.send.BufferedAmount() > p.cfg.High {
			select {
			case <-p.drained:
			case <-time.After(100 * time.Millisecond): // a missed signal
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		}
		c := int(min(int64(p.cfg.Chunk), n-sent))
		if err := p.send.Send(p.buf[:c]); err != nil {
			return Result{}, fmt.Errorf("dcbench: send: %w", err)
		}
		sent += int64(c)
	}
	for p.got.Load() < want {
		select {
		case <-p.progress:
		case <-ctx.Done():
			return Result{}, fmt.Errorf("dcbench: received %d of %d bytes: %w", p.got.Load()-(want-n), n, ctx.Err())
		}
	}
	return Result{Bytes: n, Elapsed: time.Since(start), CPU: CPUTime() - cpu0}, nil
}

// Close closes both peer connections.
func (p *Pair) Close() error {
	return errors.Join(p.a.Close(), p.b.Close())
}

// CPUTime is the CPU time this process has used (user and system).
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
