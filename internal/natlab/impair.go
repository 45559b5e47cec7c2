package natlab

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Impairment degrades a home's link. It applies to every IPv4 packet the
// home router forwards, in both directions, so a round trip through one
// impaired home gains about 2×Delay and survives with probability
// (1-Loss)². The zero value impairs nothing.
type Impairment struct {
	// Delay is added to each packet.
	Delay time.Duration
	// Jitter spreads the delay uniformly over Delay±Jitter (clamped at
	// zero). Packets are held independently, so jitter can reorder them,
	// as netem does.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a packet is dropped.
	Loss float64
	// Seed seeds the random source for reproducible loss and jitter;
	// zero picks a random seed.
	Seed uint64
}

func (im Impairment) validate() error {
	if im.Delay < 0 || im.Jitter < 0 || im.Jitter > time.Hour || im.Delay > time.Hour {
		return fmt.Errorf("%w: delay %v jitter %v", ErrBadImpairment, im.Delay, im.Jitter)
	}
	if !(im.Loss >= 0 && im.Loss <= 1) { // also rejects NaN
		return fmt.Errorf("%w: loss %v not in [0,1]", ErrBadImpairment, im.Loss)
	}
	return nil
}

// ImpairStats counts what an impairment did to packets.
type ImpairStats struct {
	Queued  uint64 // packets the kernel handed over
	Dropped uint64 // dropped by Loss
	Passed  uint64 // released after their delay
}

// nfqueueNum is the queue number used in every router: queues are per
// network namespace, so routers never collide.
const nfqueueNum = 0

// Impair applies im to home's router, replacing any earlier impairment;
// a zero Impairment removes it. Packets are diverted with iptables'
// NFQUEUE target in the router's mangle FORWARD chain to a userspace
// delayer in the test process (tc netem is not available on this kernel),
// which holds each for its delay and then accepts or drops it. It stops at
// teardown. Must be called from the test goroutine.
func (l *Lab) Impair(home *Home, im Impairment) {
	l.t.Helper()
	if err := l.impairErr(home, im); err != nil {
		l.t.Fatalf("natlab: impair %s: %v", home, err)
	}
}

// ImpairStats reports the counters of home's current impairment (zero
// when it has none).
func (l *Lab) ImpairStats(home *Home) ImpairStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	if im := l.impair[home]; im != nil {
		return im.stats()
	}
	return ImpairStats{}
}

func (l *Lab) impairErr(home *Home, im Impairment) error {
	if err := im.validate(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	cur := l.impair[home]
	l.mu.Unlock()

	if im == (Impairment{}) {
		if cur == nil {
			return nil
		}
		err := l.iptablesQueue(home.Router, "-D")
		cur.close() // releases what it held
		l.mu.Lock()
		if l.impair != nil {
			delete(l.impair, home)
		}
		l.mu.Unlock()
		return err
	}
	if cur != nil {
		cur.set(im)
		return nil
	}
	var q *nfq
	if err := home.Router.Do(func() (err error) {
		q, err = openNFQ(nfqueueNum, 4096)
		return err
	}); err != nil {
		return err
	}
	imp := newImpairer(q, im)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		imp.close()
		return ErrClosed
	}
	l.impair[home] = imp
	l.mu.Unlock()
	// The queue is bound before the rule exists, so no packet waits on an
	// absent reader.
	if err := l.iptablesQueue(home.Router, "-A"); err != nil {
		return err
	}
	l.log.Info("natlab: impair", "home", home.Name, "delay", im.Delay, "jitter", im.Jitter, "loss", im.Loss)
	return nil
}

// iptablesQueue adds (-A) or deletes (-D) the NFQUEUE rule.
func (l *Lab) iptablesQueue(router *Host, op string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := router.Output(ctx, "iptables", "-w", "5", "-t", "mangle", op, "FORWARD",
		"-j", "NFQUEUE", "--queue-num", strconv.Itoa(nfqueueNum))
	return err
}

// impairer holds queued packets for their delay and then gives verdicts.
type impairer struct {
	q *nfq

	queued, dropped, passed atomic.Uint64

	mu      sync.Mutex // guards the fields below
	im      Impairment
	rng     *rand.Rand
	pending pendingHeap
	closed  bool

	wake chan struct{} // a new earliest deadline, or close
	done chan struct{}
	wg   sync.WaitGroup
}

func newImpairer(q *nfq, im Impairment) *impairer {
	p := &impairer{q: q, wake: make(chan struct{}, 1), done: make(chan struct{})}
	p.set(im)
	p.wg.Add(2)
	go p.readLoop()
	go p.releaseLoop()
	return p
}

func (p *impairer) set(im Impairment) {
	seed := im.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	p.mu.Lock()
	p.im = im
	p.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p.mu.Unlock()
}

func (p *impairer) stats() ImpairStats {
	return ImpairStats{Queued: p.queued.Load(), Dropped: p.dropped.Load(), Passed: p.passed.Load()}
}

// close stops both loops, accepts every packet still held (so removing an
// impairment does not lose traffic) and closes the socket.
func (p *impairer) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	held := p.pending
	p.pending = nil
	p.mu.Unlock()
	close(p.done)
	for _, h := range held {
		if p.q.verdict(h.id, nfAccept) == nil {
			p.passed.Add(1)
		}
	}
	_ = p.q.close()
	p.wg.Wait()
}

func (p *impairer) readLoop() {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	var pkts []nfqPacket
	for {
		n, err := p.q.recv(buf)
		if err != nil {
			return // closed (os.ErrClosed) or the socket broke
		}
		pkts, _ = parsePackets(buf[:n], pkts[:0]) // keep what parsed
		now := time.Now()
		for _, pk := range pkts {
			p.queued.Add(1)
			p.mu.Lock()
			if p.closed { // removal in progress: let it through
				p.mu.Unlock()
				if p.q.verdict(pk.ID, nfAccept) == nil {
					p.passed.Add(1)
				}
				continue
			}
			drop := p.im.Loss > 0 && p.rng.Float64() < p.im.Loss
			d := p.im.Delay
			if j := p.im.Jitter; j > 0 {
				d += time.Duration(p.rng.Int64N(int64(2*j)+1)) - j
			}
			var wake bool
			if !drop && d > 0 {
				at := now.Add(d)
				wake = len(p.pending) == 0 || at.Before(p.pending[0].at)
				heap.Push(&p.pending, pending{at: at, id: pk.ID})
			}
			p.mu.Unlock()
			switch {
			case drop:
				if p.q.verdict(pk.ID, nfDrop) == nil {
					p.dropped.Add(1)
				}
			case d <= 0:
				if p.q.verdict(pk.ID, nfAccept) == nil {
					p.passed.Add(1)
				}
			case wake:
				select {
				case p.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (p *impairer) releaseLoop() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []uint32
	for {
		p.mu.Lock()
		now := time.Now()
		due = due[:0]
		for len(p.pending) > 0 && !p.pending[0].at.After(now) {
			due = append(due, heap.Pop(&p.pending).(pending).id)
		}
		next := time.Hour
		if len(p.pending) > 0 {
			next = p.pending[0].at.Sub(now)
		}
		p.mu.Unlock()
		for _, id := range due {
			if err := p.q.verdict(id, nfAccept); err == nil {
				p.passed.Add(1)
			} else if errors.Is(err, os.ErrClosed) {
				return
			}
		}
		timer.Reset(next)
		select {
		case <-p.done:
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

type pending struct {
	at time.Time
	id uint32
}

// pendingHeap is a min-heap on release time.
type pendingHeap []pending

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h pendingHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *pendingHeap) Push(x any)        { *h = append(*h, x.(pending)) }
func (h *pendingHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
