package supernode

import (
	"context"
	"math"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
)

// voiceSessionKbps is what one relayed voice session costs the operator's
// link in wire bytes, in each direction: 160-byte packets (64 kbit/s Opus
// with RTP and SRTP) at 50 per second each way, plus IP, UDP and
// ChannelData headers: (160+28)*50*8 + (160+4+28)*50*8 = 152 kbit/s. A
// new session is counted at this rate until its own rate is known.
const voiceSessionKbps = 152

// Governor timing: how often rates are measured and how smoothly (a
// session's rate is an average over about rateWindow, starting from a
// voice call's), how long a new session counts at least at the voice
// rate, how long a browser's admission waits for its allocation, and how
// far and how long traffic must stay over the budget before flows are
// shed (jitter and a generator catching up are not overload).
const (
	governTick      = 250 * time.Millisecond
	rateWindow      = 2 * time.Second
	youngSession    = 2 * time.Second
	reservationLife = 10 * time.Second
	shedTolerance   = 1.10
	shedAfter       = 8   // ticks in a row over budget*shedTolerance: 2 s
	busyLimit       = 0.9 // the data plane's loop busy this much of the time: refuse new sessions
)

// defaultMaxSessions sizes the session cap from the budget: room for four
// times the voice sessions the budget carries, because most allocations
// idle (gathered for a call that went direct) and cost no bandwidth; the
// budget itself decides what is carried.
func defaultMaxSessions(mbps float64) int {
	return min(max(8, int(4*mbps*1000/voiceSessionKbps)), maxDefaultSessions)
}

// maxDefaultSessions caps the sessions a budget alone implies (a budget
// of many Gbit/s must not ask for millions, which registration refuses).
const maxDefaultSessions = 100_000

// admission holds sessions admitted but without an allocation yet: QUIC
// relay streams (until their TURN Allocate) and browsers' Allocates
// (between pion's quota check and the allocation), so a burst of requests
// cannot all pass the same check.
type admission struct {
	mu       sync.Mutex // guards the fields below
	pending  map[netip.AddrPort]reservation
	userPend map[string]int
	fresh    int // allocations created since the governor's last tick
}

type reservation struct {
	user   string
	at     time.Time
	stream bool // held until the stream allocates or closes
}

// admitSession checks every limit for a new session of user from key
// (the client's address: a stream's synthetic one, or a browser's) and
// reserves its place. A second call for the same reservation succeeds
// (a retransmitted Allocate, or the Allocate of an admitted stream).
func (s *Server) admitSession(user string, key netip.AddrPort, stream bool) *proto.Error {
	a := &s.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.pending[key]; ok && r.user == user {
		return nil
	}
	if !s.accepting.Load() {
		s.stats.notPromoted.Add(1)
		return proto.Errorf(proto.CodeUnavailable, "supernode %s is not promoted (%s)", s.cfg.Name, s.stateReason())
	}
	if n := s.sessions() + len(a.pending); n >= s.cfg.MaxSessions {
		s.stats.sessionsFull.Add(1)
		return proto.Errorf(proto.CodeOverBudget, "supernode %s is full: %d of %d sessions", s.cfg.Name, n, s.cfg.MaxSessions)
	}
	if n := s.users.get(user) + a.userPend[user]; n >= s.cfg.MaxAllocationsPerUser {
		s.stats.userOverQuota.Add(1)
		return proto.Errorf(proto.CodeOverBudget, "%s already has %d relay sessions on %s (limit %d)", user, n, s.cfg.Name, s.cfg.MaxAllocationsPerUser)
	}
	budget := s.cfg.MaxRelayMbps * 1e6
	load := s.gov.expected() + float64(a.fresh+len(a.pending)+1)*voiceSessionKbps*1000
	if load > budget {
		s.stats.bandwidthFull.Add(1)
		return proto.Errorf(proto.CodeOverBudget, "supernode %s is at its bandwidth budget: %.1f of %.1f Mbit/s on the wire with this call", s.cfg.Name, load/1e6, s.cfg.MaxRelayMbps)
	}
	if b := s.gov.busy(); b > busyLimit {
		s.stats.busy.Add(1)
		return proto.Errorf(proto.CodeOverBudget, "supernode %s is busy: its relay loop is %d%% occupied", s.cfg.Name, int(b*100))
	}
	if a.pending == nil {
		a.pending, a.userPend = map[netip.AddrPort]reservation{}, map[string]int{}
	}
	a.pending[key] = reservation{user: user, at: time.Now(), stream: stream}
	a.userPend[user]++
	return nil
}

// release ends key's reservation: its allocation exists now (counted by
// pion), or it will not come (the stream closed).
func (s *Server) release(key netip.AddrPort, allocated bool) {
	a := &s.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if allocated {
		a.fresh++
	}
	r, ok := a.pending[key]
	if !ok {
		return
	}
	delete(a.pending, key)
	if a.userPend[r.user]--; a.userPend[r.user] <= 0 {
		delete(a.userPend, r.user)
	}
}

// pendingSessions is the number of admitted sessions without an allocation.
func (s *Server) pendingSessions() int {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	return len(s.adm.pending)
}

// governor measures the relay's traffic, feeds admission, and sheds
// whole flows when the traffic of admitted sessions outgrows the budget
// (sessions that raised their bitrate): the newest first, so old calls
// stay whole and no call loses random packets.
type governor struct {
	expectedBps atomic.Uint64 // float64 bits: load admission counts
	rateBps     atomic.Uint64 // float64 bits: measured wire rate
	busyFrac    atomic.Uint64 // float64 bits: data plane loop occupancy
	busyNanos   atomic.Int64  // the loop's processing time, summed
	over        int           // consecutive ticks over the budget (governor goroutine)
	lastBusy    int64
	last        time.Time
}

func (g *governor) expected() float64 { return math.Float64frombits(g.expectedBps.Load()) }

// free takes an ended session's share off the expected load at once, so
// its place can be given before the next tick.
func (g *governor) free(bps float64) {
	for {
		old := g.expectedBps.Load()
		v := max(0, math.Float64frombits(old)-bps)
		if g.expectedBps.CompareAndSwap(old, math.Float64bits(v)) {
			return
		}
	}
}
func (g *governor) rate() float64 { return math.Float64frombits(g.rateBps.Load()) }
func (g *governor) busy() float64 { return math.Float64frombits(g.busyFrac.Load()) }

// govern runs the governor until ctx ends.
func (s *Server) govern(ctx context.Context) {
	t := time.NewTicker(governTick)
	defer t.Stop()
	s.gov.last = time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.governTick(now)
		}
	}
}

// governTick measures every allocation's rate, sheds if over budget,
// expires stale reservations and publishes the load.
func (s *Server) governTick(now time.Time) {
	g := &s.gov
	dt := now.Sub(g.last).Seconds()
	g.last = now
	if dt <= 0 {
		return
	}
	s.adm.mu.Lock()
	s.adm.fresh = 0
	for k, r := range s.adm.pending {
		if !r.stream && now.Sub(r.at) > reservationLife {
			delete(s.adm.pending, k)
			if s.adm.userPend[r.user]--; s.adm.userPend[r.user] <= 0 {
				delete(s.adm.userPend, r.user)
			}
		}
	}
	s.adm.mu.Unlock()

	conns := s.relays.all()
	var total, expected float64
	alpha := min(1, dt/rateWindow.Seconds())
	for _, c := range conns {
		b := c.bytes.Load()
		inst := float64(b-c.lastBytes) * 8 / dt
		if c.lastBytes == 0 && !c.measured {
			c.rateBps, c.measured = voiceSessionKbps*1000, true // the prior: a voice call
		}
		c.lastBytes = b
		c.rateBps += alpha * (inst - c.rateBps)
		total += c.rateBps
		share := c.rateBps
		if now.Sub(c.created) < youngSession {
			share = max(share, voiceSessionKbps*1000)
		}
		c.share.Store(math.Float64bits(share))
		expected += share
	}
	budget := s.cfg.MaxRelayMbps * 1e6
	if total > budget*shedTolerance {
		g.over++
	} else {
		g.over = 0
	}
	if g.over >= shedAfter { // sustained, not a burst
		g.over = 0
		sort.Slice(conns, func(i, j int) bool { return conns[i].created.After(conns[j].created) })
		for _, c := range conns {
			if total <= budget {
				break
			}
			if c.rateBps <= 0 || c.shed.Load() {
				continue
			}
			total -= c.rateBps
			expected -= c.rateBps
			s.shedFlow(c)
		}
	}
	busyNow := g.busyNanos.Load()
	g.busyFrac.Store(math.Float64bits(float64(busyNow-g.lastBusy) / 1e9 / dt))
	g.lastBusy = busyNow
	g.rateBps.Store(math.Float64bits(total))
	g.expectedBps.Store(math.Float64bits(max(expected, 0)))
}

// shedFlow ends one allocation: its packets stop at once, and the
// allocation goes (the client's stream closes, or its relay socket), so
// its call moves to another path or supernode instead of limping.
func (s *Server) shedFlow(c *relayConn) {
	if c.shed.Swap(true) {
		return
	}
	s.stats.shed.Add(1)
	s.limitedLog("shed a relayed flow over the bandwidth budget", "relay_port", c.port, "rate_kbps", int(c.rateBps/1000))
	if sc := c.stream.Load(); sc != nil {
		sc.Close()
	}
	c.Close()
}
