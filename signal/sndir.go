package signal

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
)

// The supernode directory. Every promotion decision is a record in the
// supernodes bucket (id -> snRecord), written by the node that holds the
// supernode's signaling session (it probes it, under a lease, so no probe
// is run twice); every node watches the bucket and keeps a replica, so it
// hands any promoted supernode to its users and moves its users off one
// that is demoted, wherever the decision was taken. A supernode whose
// node died is demoted by the first node that notices. Relay tokens are
// signed with one key for the whole cluster (created once, in the conf
// bucket), so a supernode accepts tokens from every node.

// snRecord is a supernode as the directory keeps it.
type snRecord struct {
	State    proto.SupernodeState    `json:"state"`
	Reason   string                  `json:"reason,omitempty"`
	Reg      proto.SupernodeRegister `json:"reg"`
	Secret   []byte                  `json:"secret,omitempty"` // TURN REST secret, kept across promotions
	Mbps     float64                 `json:"mbps,omitempty"`
	RTTms    float64                 `json:"rtt_ms,omitempty"`
	Sessions int                     `json:"sessions,omitempty"` // from its heartbeats
	Node     string                  `json:"node"`               // incarnation holding its session
}

// load is the supernode's reported load, 0 to 1.
func (r *snRecord) load() float64 {
	if r.Reg.MaxSessions <= 0 {
		return 0
	}
	return float64(r.Sessions) / float64(r.Reg.MaxSessions)
}

// snDir is the replica and the record writer.
type snDir struct {
	m *snManager
	w jetstream.KeyWatcher

	mu   sync.Mutex // guards recs
	recs map[string]*snRecord

	wmu     sync.Mutex // guards pending, stopped
	pending map[string]*snRecord
	order   []string
	wake    chan struct{}
	stopped bool
}

func newSNDir(m *snManager) *snDir {
	return &snDir{m: m, recs: map[string]*snRecord{}, pending: map[string]*snRecord{}, wake: make(chan struct{}, 1)}
}

// start loads the replica and starts the watch and the writer (the
// manager's goroutine group).
func (d *snDir) start(ctx context.Context) error {
	w, err := d.m.s.st.sn.WatchAll(context.Background())
	if err != nil {
		return fmt.Errorf("signal: watch supernodes: %w", err)
	}
	d.w = w
	ready := make(chan struct{})
	d.m.wg.Add(2)
	go d.watchLoop(ready)
	go d.writeLoop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("signal: load supernodes: %w", ctx.Err())
	}
}

func (d *snDir) stop() {
	d.wmu.Lock()
	d.stopped = true
	d.wmu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	if d.w != nil {
		d.w.Stop()
	}
}

func (d *snDir) watchLoop(ready chan struct{}) {
	defer d.m.wg.Done()
	initial := true
	for e := range d.w.Updates() {
		if e == nil {
			if initial {
				initial = false
				close(ready)
			}
			continue
		}
		var nu *snRecord
		if e.Operation() == jetstream.KeyValuePut {
			var r snRecord
			if json.Unmarshal(e.Value(), &r) != nil {
				continue
			}
			nu = &r
		}
		id := unkey(e.Key())
		d.mu.Lock()
		old := d.recs[id]
		if nu == nil {
			delete(d.recs, id)
		} else {
			d.recs[id] = nu
		}
		d.mu.Unlock()
		if !initial {
			d.changed(id, old, nu)
		}
	}
	if initial {
		close(ready)
	}
}

// changed acts on a decision, wherever it was taken: users here get a
// list with a supernode that was promoted, and move off one that is not
// any more.
func (d *snDir) changed(id string, old, nu *snRecord) {
	was := old != nil && old.State == proto.SupernodePromoted
	is := nu != nil && nu.State == proto.SupernodePromoted
	switch {
	case is && !was:
		d.m.broadcastLists(id, "supernode "+id+" promoted")
	case was && !is:
		reason := "supernode " + id + " is gone"
		if nu != nil {
			reason = "supernode " + id + " " + string(nu.State) + ": " + nu.Reason
		}
		d.m.moveUsers(id, reason)
	}
}

// get returns a copy of id's record.
func (d *snDir) get(id string) (snRecord, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.recs[id]
	if !ok {
		return snRecord{}, false
	}
	return *r, true
}

// put queues id's record for writing (the latest one wins).
func (d *snDir) put(id string, r *snRecord) {
	d.wmu.Lock()
	if _, queued := d.pending[id]; !queued {
		d.order = append(d.order, id)
	}
	d.pending[id] = r
	d.wmu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *snDir) writeLoop() {
	defer d.m.wg.Done()
	for {
		d.wmu.Lock()
		if len(d.order) == 0 {
			stopped := d.stopped
			d.wmu.Unlock()
			if stopped {
				return
			}
			<-d.wake
			continue
		}
		id := d.order[0]
		d.order = d.order[1:]
		r := d.pending[id]
		delete(d.pending, id)
		d.wmu.Unlock()
		if err := d.write(id, r); err != nil {
			d.m.log.Warn("signal: supernode directory write", "supernode", id, "err", err)
		}
	}
}

// write stores r unless the record belongs to another node that is alive
// (the supernode signed in there since: that node decides now).
func (d *snDir) write(id string, r *snRecord) error {
	s := d.m.s
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for attempt := 0; attempt < 5; attempt++ {
		e, err := s.st.sn.Get(ctx, nkey(id))
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			return err
		default:
			var cur snRecord
			if json.Unmarshal(e.Value(), &cur) == nil {
				if r.Node != s.inc {
					if cur.Node != r.Node {
						return nil // a dead node's record, cleaned up: it moved on meanwhile
					}
				} else if cur.Node != s.inc && s.nodes.alive(cur.Node) && r.State != proto.SupernodeProbing {
					return nil // it signed in on another node meanwhile: that node decides
				}
			}
			rev = e.Revision()
		}
		v, _ := json.Marshal(r)
		if rev == 0 {
			_, err = s.st.sn.Create(ctx, nkey(id), v)
		} else {
			_, err = s.st.sn.Update(ctx, nkey(id), v, rev)
		}
		if err == nil || !(errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)) {
			return err
		}
	}
	return fmt.Errorf("record keeps changing")
}

// selectFor picks up to n promoted supernodes, on live nodes, for user,
// least loaded first.
func (d *snDir) selectFor(user string, exclude map[string]bool, n int) []string {
	type cand struct {
		id   string
		load float64
		rtt  float64
	}
	var cands []cand
	d.mu.Lock()
	for id, r := range d.recs {
		if r.State == proto.SupernodePromoted && id != user && !exclude[id] && d.m.s.nodes.alive(r.Node) {
			cands = append(cands, cand{id, r.load(), r.RTTms})
		}
	}
	d.mu.Unlock()
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].load != cands[j].load {
			return cands[i].load < cands[j].load
		}
		if cands[i].rtt != cands[j].rtt {
			return cands[i].rtt < cands[j].rtt
		}
		return cands[i].id < cands[j].id
	})
	out := make([]string, 0, min(n, len(cands)))
	for _, c := range cands[:min(n, len(cands))] {
		out = append(out, c.id)
	}
	return out
}

// anyPromoted reports whether a supernode can be handed out.
func (d *snDir) anyPromoted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.recs {
		if r.State == proto.SupernodePromoted && d.m.s.nodes.alive(r.Node) {
			return true
		}
	}
	return false
}

// nodeDied demotes the supernodes a dead node held.
func (d *snDir) nodeDied(inc string) {
	var gone []string
	d.mu.Lock()
	for id, r := range d.recs {
		if r.Node == inc && r.State == proto.SupernodePromoted {
			gone = append(gone, id)
		}
	}
	d.mu.Unlock()
	for _, id := range gone {
		r, ok := d.get(id)
		if !ok {
			continue
		}
		r.State, r.Reason = proto.SupernodeDemoted, "shut down: the signaling node it was connected to stopped"
		d.put(id, &r)
	}
}

// sharedTokenKey is the relay token key of the whole cluster: the one in
// the conf bucket, created by the first node that needs it.
func sharedTokenKey(st *state) (ed25519.PrivateKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const k = "relay-token-key"
	var key ed25519.PrivateKey
	err := retry(ctx, func(ctx context.Context) error {
		e, err := st.conf.Get(ctx, k)
		if err == nil {
			if len(e.Value()) != ed25519.PrivateKeySize {
				return fmt.Errorf("the shared relay token key is %d bytes", len(e.Value()))
			}
			key = ed25519.PrivateKey(e.Value())
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err // a cluster still electing: again
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if _, err := st.conf.Create(ctx, k, priv); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		return errors.New("created: read it back") // whoever won, all read the same
	})
	if err != nil {
		return nil, fmt.Errorf("signal: relay token key: %w", err)
	}
	return key, nil
}
