package signal

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/prometheus/client_golang/prometheus"
)

// SupernodeConfig configures how the server promotes supernodes and what
// it hands users for relaying. Every zero value is usable.
type SupernodeConfig struct {
	// Disabled refuses every supernode registration.
	Disabled bool
	// TokenKey signs relay tokens. Nil generates a key at New, so tokens
	// (short-lived) do not survive a restart; promotions are redone on
	// reconnect anyway.
	TokenKey ed25519.PrivateKey
	// MinMbps is the least bandwidth the probe must measure. Zero means 2.
	MinMbps float64
	// ProbeBytes is the size of the bandwidth test. Zero means 1 MiB.
	ProbeBytes int
	// ProbeTimeout bounds each probe step (handshake, transfer, TURN
	// checks). Zero means 5 s.
	ProbeTimeout time.Duration
	// MinUptime is how long a candidate must have been signed in before
	// it is promoted (checks pass earlier; it waits). Zero means none.
	MinUptime time.Duration
	// Heartbeat is the interval promoted supernodes beat at; three missed
	// beats demote. Zero means 5 s.
	Heartbeat time.Duration
	// Recheck is how often a promoted supernode is probed again. Zero
	// means 10 minutes.
	Recheck time.Duration
	// RetryAfter is what a refusal tells the candidate to wait before
	// registering again. Zero means 5 minutes.
	RetryAfter time.Duration
	// PerUser is how many supernodes each user is given. Zero means 3.
	PerUser int
	// TokenTTL is a relay token's life; CredentialTTL a TURN credential's.
	// Zero means 10 minutes and 12 hours.
	TokenTTL, CredentialTTL time.Duration
	// AllowAddrs lists prefixes a candidate may advertise although they
	// are loopback, private or link-local (tests, private deployments).
	AllowAddrs []netip.Prefix
	// ListenPacket opens the probe's UDP sockets (a fresh one per probe,
	// so the candidate has never seen its port). Nil means net.ListenPacket.
	ListenPacket func(network, address string) (net.PacketConn, error)
	// Dial opens the probe's TCP connections. Nil means a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// ProbeFrom is the local IP UDP probes leave from: ideally an address
	// the candidate has never contacted (a second address of this host),
	// so only a truly open port answers. The zero value means any.
	ProbeFrom netip.Addr
}

func (c *SupernodeConfig) setDefaults() {
	if c.MinMbps == 0 {
		c.MinMbps = 2
	}
	if c.ProbeBytes == 0 {
		c.ProbeBytes = 1 << 20
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = 5 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.Recheck == 0 {
		c.Recheck = 10 * time.Minute
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 5 * time.Minute
	}
	if c.PerUser == 0 {
		c.PerUser = 3
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 10 * time.Minute
	}
	if c.CredentialTTL == 0 {
		c.CredentialTTL = 12 * time.Hour
	}
	if c.ListenPacket == nil {
		c.ListenPacket = func(network, address string) (net.PacketConn, error) {
			return net.ListenPacket(network, address) //nolint:noctx // bind only
		}
	}
	if c.Dial == nil {
		d := &net.Dialer{}
		c.Dial = d.DialContext
	}
}

// snode is one supernode candidate (or promoted supernode).
type snode struct {
	id     string // its user name; the id in tokens and lists
	sess   *session
	key    ed25519.PublicKey
	reg    proto.SupernodeRegister
	since  time.Time // sign-in time, for the uptime threshold
	gen    int       // registration generation: stale probe results are ignored
	state  proto.SupernodeState
	reason string
	secret []byte // TURN REST secret, set at first promotion

	mbps, rttMs float64
	checked     time.Time // last successful probe
	probed      time.Time // last probe started by a registration
	checking    bool
	lastBeat    time.Time
	beat        proto.SupernodeHeartbeat
	overloaded  bool
}

// load is the supernode's reported load, 0 to 1.
func (n *snode) load() float64 {
	if n.reg.MaxSessions <= 0 {
		return 0
	}
	return float64(n.beat.Sessions) / float64(n.reg.MaxSessions)
}

// SupernodeInfo describes one supernode for status pages and tests.
type SupernodeInfo struct {
	ID       string
	State    proto.SupernodeState
	Reason   string
	Mbps     float64
	RTTms    float64
	Sessions int
	QUIC     string
}

// snManager runs promotion, heartbeats, re-checks and selection.
type snManager struct {
	s   *Server
	cfg SupernodeConfig
	log *slog.Logger
	key ed25519.PrivateKey
	pub string // base64 of key's public half

	mu       sync.Mutex // guards the fields below
	nodes    map[string]*snode
	assigned map[string]map[string]bool // user -> supernode ids last handed out
	// secrets outlive sessions: a supernode that reconnects and is
	// promoted again keeps its TURN secret, so credentials already handed
	// out (and live allocations' refreshes) stay valid.
	secrets map[string][]byte
	closed  bool
	dir     *snDir // every node's decisions (sndir.go)

	stop chan struct{}
	wg   sync.WaitGroup // the ticker and probe goroutines

	// Counters, exported by SupernodeCollector.
	registrations, promotions, refusals, demotions, lists, tokens atomic.Int64
}

func newSNManager(s *Server, cfg SupernodeConfig) (*snManager, error) {
	cfg.setDefaults()
	key := cfg.TokenKey
	if key == nil {
		k, err := sharedTokenKey(s.st) // one key for every node (sndir.go)
		if err != nil {
			return nil, err
		}
		key = k
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: supernode token key must be an Ed25519 private key", ErrBadConfig)
	}
	log := s.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &snManager{
		s: s, cfg: cfg, log: log, key: key,
		pub:      base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)),
		nodes:    map[string]*snode{},
		assigned: map[string]map[string]bool{},
		secrets:  map[string][]byte{},
		stop:     make(chan struct{}),
	}
	m.dir = newSNDir(m)
	m.wg.Add(1)
	go m.tickLoop()
	return m, nil
}

// TokenKey returns the public key supernodes verify relay tokens with.
func (s *Server) TokenKey() ed25519.PublicKey { return s.sn.key.Public().(ed25519.PublicKey) }

// Supernodes lists every registered candidate and supernode, by id: those
// signed in to this node as this node sees them, the others as the
// directory has them.
func (s *Server) Supernodes() []SupernodeInfo {
	m := s.sn
	m.mu.Lock()
	out := make([]SupernodeInfo, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, SupernodeInfo{ID: n.id, State: n.state, Reason: n.reason, Mbps: n.mbps, RTTms: n.rttMs, Sessions: n.beat.Sessions, QUIC: n.reg.QUIC})
	}
	local := len(out)
	m.mu.Unlock()
	m.dir.mu.Lock()
	for id, r := range m.dir.recs {
		dup := false
		for _, o := range out[:local] {
			dup = dup || o.ID == id
		}
		if !dup {
			out = append(out, SupernodeInfo{ID: id, State: r.State, Reason: r.Reason, Mbps: r.Mbps, RTTms: r.RTTms, Sessions: r.Sessions, QUIC: r.Reg.QUIC})
		}
	}
	m.dir.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (m *snManager) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	close(m.stop)
	m.dir.stop()
	m.wg.Wait()
}

// handle processes a supernode message from an authenticated session.
func (m *snManager) handle(ss *session, env *proto.Envelope) {
	switch env.Type {
	case proto.TypeSupernodeRegister:
		r, err := proto.DecodeBody[*proto.SupernodeRegister](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		if m.cfg.Disabled {
			ss.sendError(proto.Errorf(proto.CodeForbidden, "this server does not accept supernodes"), env.ID)
			return
		}
		ss.ack(env.ID)
		m.register(ss, r)
	case proto.TypeSupernodeHeartbeat:
		h, err := proto.DecodeBody[*proto.SupernodeHeartbeat](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		if !m.heartbeat(ss, h) {
			ss.sendError(proto.Errorf(proto.CodeNotFound, "heartbeat from %s, which is not a registered supernode", ss.name), env.ID)
			return
		}
		ss.ack(env.ID)
	case proto.TypeRelayRequest:
		r, err := proto.DecodeBody[*proto.RelayRequest](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		reason := "as requested"
		if r.Reason != "" {
			reason = "as requested (" + r.Reason + ")"
		}
		m.sendList(ss, env.ID, r.Exclude, reason)
	default:
		ss.violation(proto.Errorf(proto.CodeUnknownType, "%s is not something a client sends", env.Type), env.ID)
	}
}

// isSupernodeType reports whether the server's supernode manager handles t.
func isSupernodeType(t proto.Type) bool {
	switch t {
	case proto.TypeSupernodeRegister, proto.TypeSupernodeHeartbeat, proto.TypeRelayRequest,
		proto.TypeSupernodeStatus, proto.TypeSupernodes:
		return true
	}
	return false
}

// register starts (or restarts) the checks of a candidate.
func (m *snManager) register(ss *session, r *proto.SupernodeRegister) {
	key, err := proto.DecodePublicKey(ss.key)
	if err != nil {
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	n := m.nodes[ss.name]
	if n == nil || n.sess != ss {
		n = &snode{id: ss.name, sess: ss, since: time.Now()}
		m.nodes[ss.name] = n
	}
	// A probe costs a handshake and a bandwidth test, and sends packets to
	// the advertised addresses: one at a time, and not more often than
	// minProbeInterval per session.
	if n.checking || time.Since(n.probed) < minProbeInterval {
		m.mu.Unlock()
		ss.sendError(proto.Errorf(proto.CodeRateLimited, "supernode %s is being checked or was checked less than %s ago", n.id, minProbeInterval), "")
		return
	}
	n.probed = time.Now()
	wasPromoted := n.state == proto.SupernodePromoted
	n.gen++
	n.key, n.reg = key, *r
	n.checking = true
	gen := n.gen
	if reason := m.addressProblem(r); reason != "" {
		n.checking = false
		m.setStateLocked(n, proto.SupernodeRefused, reason)
		m.mu.Unlock()
		m.sendStatus(n, nil)
		return
	}
	m.setStateLocked(n, proto.SupernodeProbing, fmt.Sprintf("checking %s from an address it has never contacted", r.QUIC))
	m.mu.Unlock()
	m.sendStatus(n, nil)
	_ = wasPromoted // users move off it when the directory hears it is probing again (sndir.go)
	m.startProbe(n, gen, false)
}

// minProbeInterval spaces the probes a registration may trigger.
const minProbeInterval = 10 * time.Second

// addressProblem says why advertised addresses cannot serve others. They
// must be public and all on one IP (one machine: the probe must not be a
// way to make this server send packets to several third parties).
func (m *snManager) addressProblem(r *proto.SupernodeRegister) string {
	var first netip.Addr
	for _, a := range []string{r.QUIC, r.TURNUDP, r.TURNTCP, r.TURNTLS} {
		if a == "" {
			continue
		}
		ap, err := proto.ParseRelayAddr(a)
		if err != nil {
			return "refused: " + err.Error()
		}
		ip := ap.Addr()
		if !first.IsValid() {
			first = ip
		} else if ip != first {
			return fmt.Sprintf("refused: advertised addresses are on different IPs (%s and %s); a supernode is one machine", first, ip)
		}
		allowed := false
		for _, p := range m.cfg.AllowAddrs {
			if p.Contains(ip) {
				allowed = true
			}
		}
		if !allowed && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsMulticast()) {
			return fmt.Sprintf("unreachable: advertised address %s is not public (loopback, private or link-local); give it your public IP (parley supernode --public-addr, parley chat --supernode-public-addr) and forward the ports", a)
		}
	}
	return ""
}

// setStateLocked records a decision and logs it. m.mu is held.
func (m *snManager) setStateLocked(n *snode, st proto.SupernodeState, reason string) {
	n.state, n.reason = st, reason
	switch st {
	case proto.SupernodePromoted:
		m.promotions.Add(1)
	case proto.SupernodeRefused:
		m.refusals.Add(1)
	case proto.SupernodeDemoted:
		m.demotions.Add(1)
	case proto.SupernodeProbing:
		m.registrations.Add(1)
	}
	m.publishLocked(n)
	lvl := slog.LevelInfo
	if st == proto.SupernodeRefused || st == proto.SupernodeDemoted {
		lvl = slog.LevelWarn
	}
	m.log.Log(context.Background(), lvl, "signal: supernode decision", "supernode", n.id, "state", st, "reason", reason, "quic", n.reg.QUIC)
}

// sendStatus tells the candidate its current state (and, on promotion,
// its TURN secret and the token key).
func (m *snManager) sendStatus(n *snode, extra func(*proto.SupernodeStatus)) {
	m.mu.Lock()
	st := &proto.SupernodeStatus{
		ID: n.id, State: n.state, Reason: n.reason,
		MeasuredMbps: round1(n.mbps), RTTms: round1(n.rttMs),
		HeartbeatMillis: int(m.cfg.Heartbeat / time.Millisecond),
	}
	if n.state == proto.SupernodePromoted {
		st.TURNSecret = base64.StdEncoding.EncodeToString(n.secret)
		st.TokenKey = m.pub
		st.Realm = "parley"
	}
	if n.state == proto.SupernodeRefused {
		st.RetryAfterSeconds = int(m.cfg.RetryAfter / time.Second)
	}
	sess := n.sess
	m.mu.Unlock()
	if extra != nil {
		extra(st)
	}
	if env, err := proto.New(proto.TypeSupernodeStatus, "", "", st); err == nil {
		sess.sendEnv(env)
	} else {
		m.log.Error("signal: supernode status", "err", err)
	}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// heartbeat records a promoted supernode's load. It demotes on draining or
// overload and promotes again when the load falls back.
func (m *snManager) heartbeat(ss *session, h *proto.SupernodeHeartbeat) bool {
	m.mu.Lock()
	n := m.nodes[ss.name]
	if n == nil || n.sess != ss {
		m.mu.Unlock()
		return false
	}
	loadChanged := n.beat.Sessions != h.Sessions && n.state == proto.SupernodePromoted
	n.lastBeat, n.beat = time.Now(), *h
	if loadChanged {
		m.publishLocked(n) // its load, for every node's choice
	}
	var demote, repromote string
	switch {
	case h.Draining && n.state != proto.SupernodeDemoted:
		demote = "draining: the operator is stopping it"
	case n.state == proto.SupernodePromoted && m.overloadedLocked(n) != "":
		n.overloaded = true
		demote = "overloaded: " + m.overloadedLocked(n)
	case n.state == proto.SupernodeDemoted && n.overloaded && !h.Draining && m.relievedLocked(n):
		n.overloaded = false
		repromote = fmt.Sprintf("load back to %d of %d sessions", h.Sessions, n.reg.MaxSessions)
	}
	m.mu.Unlock()
	switch {
	case demote != "":
		m.demote(n, demote)
	case repromote != "":
		m.promote(n, repromote)
	}
	return true
}

// overloadedLocked says how a supernode is over its own budget, or "".
func (m *snManager) overloadedLocked(n *snode) string {
	if n.reg.MaxSessions > 0 && n.beat.Sessions >= n.reg.MaxSessions {
		return fmt.Sprintf("%d of %d sessions", n.beat.Sessions, n.reg.MaxSessions)
	}
	if n.reg.MaxRelayMbps > 0 && n.beat.RelayMbps >= 0.95*n.reg.MaxRelayMbps {
		return fmt.Sprintf("relaying %.1f of %.1f Mbps", n.beat.RelayMbps, n.reg.MaxRelayMbps)
	}
	return ""
}

// relievedLocked: back under 80% of both budgets.
func (m *snManager) relievedLocked(n *snode) bool {
	return (n.reg.MaxSessions <= 0 || float64(n.beat.Sessions) < 0.8*float64(n.reg.MaxSessions)) &&
		(n.reg.MaxRelayMbps <= 0 || n.beat.RelayMbps < 0.8*n.reg.MaxRelayMbps)
}

// promote makes n a supernode (after checks, or after an overload ended).
func (m *snManager) promote(n *snode, reason string) {
	m.mu.Lock()
	if n.secret == nil {
		n.secret = m.secrets[n.id]
	}
	if r, ok := m.dir.get(n.id); n.secret == nil && ok && len(r.Secret) > 0 {
		n.secret = r.Secret // kept across nodes: credentials handed out stay valid
	}
	if n.secret == nil {
		n.secret = make([]byte, 32)
		rand.Read(n.secret)
		m.secrets[n.id] = n.secret
	}
	n.lastBeat = time.Now()
	m.setStateLocked(n, proto.SupernodePromoted, reason)
	m.mu.Unlock()
	m.sendStatus(n, nil) // users get lists when the directory hears of it (sndir.go)
}

// demote takes n out of service and moves its users elsewhere.
func (m *snManager) demote(n *snode, reason string) {
	m.mu.Lock()
	if n.state != proto.SupernodePromoted && n.state != proto.SupernodeWaiting {
		m.mu.Unlock()
		return
	}
	m.setStateLocked(n, proto.SupernodeDemoted, reason)
	m.mu.Unlock()
	m.sendStatus(n, nil) // users move when the directory hears of it (sndir.go)
}

// sessionGone runs when a session ends: a supernode whose signaling
// connection closed is demoted at once (it can no longer be told
// anything, and a stopped process closes its connection).
func (m *snManager) sessionGone(ss *session) {
	m.mu.Lock()
	n := m.nodes[ss.name]
	if n == nil || n.sess != ss {
		delete(m.assigned, ss.name)
		m.mu.Unlock()
		return
	}
	delete(m.nodes, ss.name)
	n.gen++ // ignore probes in flight
	was := n.state
	reason := "shut down: its signaling connection closed"
	if n.beat.Draining {
		reason = "shut down: the operator stopped it"
	}
	if was == proto.SupernodePromoted || was == proto.SupernodeWaiting {
		m.setStateLocked(n, proto.SupernodeDemoted, reason)
	}
	m.mu.Unlock()
}

// tickLoop demotes supernodes that stop beating, re-checks promoted ones
// and promotes candidates whose uptime has come.
func (m *snManager) tickLoop() {
	defer m.wg.Done()
	iv := m.cfg.Heartbeat / 4
	if iv < 100*time.Millisecond {
		iv = 100 * time.Millisecond
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.tick(now)
		}
	}
}

func (m *snManager) tick(now time.Time) {
	type action struct {
		n      *snode
		what   string
		reason string
		gen    int
	}
	var acts []action
	m.mu.Lock()
	for _, n := range m.nodes {
		switch n.state {
		case proto.SupernodePromoted:
			if silent := now.Sub(n.lastBeat); silent > 3*m.cfg.Heartbeat {
				acts = append(acts, action{n: n, what: "demote", reason: fmt.Sprintf("missed heartbeats: none for %s (expected every %s)", silent.Round(100*time.Millisecond), m.cfg.Heartbeat)})
			} else if !n.checking && now.Sub(n.checked) > m.cfg.Recheck {
				n.checking = true
				acts = append(acts, action{n: n, what: "recheck", gen: n.gen})
			}
		case proto.SupernodeWaiting:
			if up := now.Sub(n.since); up >= m.cfg.MinUptime {
				acts = append(acts, action{n: n, what: "promote", reason: fmt.Sprintf("reachable, %.1f Mbps measured, up %s", n.mbps, up.Round(time.Second))})
			}
		}
	}
	m.mu.Unlock()
	for _, a := range acts {
		switch a.what {
		case "demote":
			m.demote(a.n, a.reason)
		case "recheck":
			m.startProbe(a.n, a.gen, true)
		case "promote":
			m.promote(a.n, a.reason)
		}
	}
}

// probeDone applies a probe's result.
func (m *snManager) probeDone(n *snode, gen int, recheck bool, res probeResult) {
	m.mu.Lock()
	if n.gen != gen || m.nodes[n.id] != n {
		m.mu.Unlock()
		return // re-registered or gone meanwhile
	}
	n.checking = false
	if res.err != "" {
		if recheck {
			m.mu.Unlock()
			m.demote(n, "re-check failed: "+res.err)
			return
		}
		m.setStateLocked(n, proto.SupernodeRefused, res.err)
		m.mu.Unlock()
		m.sendStatus(n, nil)
		return
	}
	n.mbps, n.rttMs, n.checked = res.mbps, res.rttMs, time.Now()
	if recheck {
		m.mu.Unlock()
		return
	}
	up := time.Since(n.since)
	if up < m.cfg.MinUptime {
		m.setStateLocked(n, proto.SupernodeWaiting, fmt.Sprintf("checks passed (%.1f Mbps); promotion after %s of uptime, now %s", res.mbps, m.cfg.MinUptime, up.Round(time.Second)))
		m.mu.Unlock()
		m.sendStatus(n, nil)
		return
	}
	m.mu.Unlock()
	m.promote(n, fmt.Sprintf("reachable from an address it never contacted, identity proven, %.1f Mbps measured (minimum %.1f)", res.mbps, m.cfg.MinMbps))
}

// listFor builds user's supernode list with fresh credentials and records
// the assignment: up to PerUser promoted supernodes from the directory,
// least loaded first, wherever they signed in.
func (m *snManager) listFor(user string, exclude []string, reason string) *proto.SupernodeList {
	ex := map[string]bool{}
	for _, id := range exclude {
		ex[id] = true
	}
	now := time.Now()
	list := &proto.SupernodeList{Supernodes: []proto.SupernodeInfo{}, Reason: reason}
	as := map[string]bool{}
	for _, id := range m.dir.selectFor(user, ex, m.cfg.PerUser) {
		r, ok := m.dir.get(id)
		if !ok || len(r.Secret) == 0 {
			continue
		}
		tok, err := proto.SignRelayToken(m.key, &proto.RelayToken{
			User: user, Supernode: id, Issued: now.Unix(), Expiry: now.Add(m.cfg.TokenTTL).Unix(), Nonce: newID(),
		})
		if err != nil {
			m.log.Error("signal: relay token", "user", user, "err", err)
			continue
		}
		tu, tp := proto.TURNCredentials(r.Secret, user, now.Add(m.cfg.CredentialTTL))
		list.Supernodes = append(list.Supernodes, proto.SupernodeInfo{
			ID: id, Label: r.Reg.Label, QUIC: r.Reg.QUIC, TURNUDP: r.Reg.TURNUDP, TURNTCP: r.Reg.TURNTCP, TURNTLS: r.Reg.TURNTLS,
			Fingerprint: r.Reg.Fingerprint, Load: round1(r.load()*100) / 100, SessionKbps: r.Reg.MaxSessionKbps,
			Token: tok, TURNUsername: tu, TURNPassword: tp, Expires: now.Add(m.cfg.TokenTTL).Unix(),
		})
		list.ICEServers = append(list.ICEServers, turnServer(&r.Reg, tu, tp))
		as[id] = true
		m.tokens.Add(1)
	}
	m.mu.Lock()
	if len(as) > 0 {
		m.assigned[user] = as
	} else {
		delete(m.assigned, user) // no supernode: nothing to remember per user
	}
	m.mu.Unlock()
	return list
}

// publishLocked writes n's state to the directory (m.mu held).
func (m *snManager) publishLocked(n *snode) {
	secret := n.secret
	if secret == nil {
		if r, ok := m.dir.get(n.id); ok {
			secret = r.Secret // not promoted yet (again): keep the one handed out before
		}
	}
	m.dir.put(n.id, &snRecord{State: n.state, Reason: n.reason, Reg: n.reg, Secret: secret,
		Mbps: n.mbps, RTTms: n.rttMs, Sessions: n.beat.Sessions, Node: m.s.inc})
}

// turnServer is a supernode as a browser's TURN server (RFC 7065 URIs).
func turnServer(r *proto.SupernodeRegister, user, pass string) proto.ICEServer {
	var urls []string
	if r.TURNUDP != "" {
		urls = append(urls, "turn:"+r.TURNUDP+"?transport=udp")
	}
	if r.TURNTCP != "" {
		urls = append(urls, "turn:"+r.TURNTCP+"?transport=tcp")
	}
	if r.TURNTLS != "" && r.TURNTLSName != "" {
		// Browsers verify a turns: server's certificate against the URL's
		// host (RFC 7065 section 3): only a name with a CA-issued
		// certificate works; an IP with the supernode's self-signed one
		// never does, so it is not offered.
		if ap, err := proto.ParseRelayAddr(r.TURNTLS); err == nil {
			urls = append(urls, "turns:"+net.JoinHostPort(r.TURNTLSName, strconv.Itoa(int(ap.Port())))+"?transport=tcp")
		}
	}
	return proto.ICEServer{URLs: urls, Username: user, Credential: pass}
}

// iceServers are the TURN servers a user's welcome carries (the same
// supernodes the list after it names), for browsers.
func (m *snManager) iceServers(user string) []proto.ICEServer {
	return m.listFor(user, nil, "").ICEServers
}

// onLogin sends a signed-in user its supernode list, if there are any.
func (m *snManager) onLogin(ss *session, agent string) {
	if strings.HasPrefix(agent, "parley-supernode") {
		return
	}
	if m.dir.anyPromoted() {
		m.sendList(ss, "", nil, "signed in")
	}
}

// onNATReport sends a user whose NAT report predicts relayed calls (it
// cannot reach a symmetric NAT directly) a fresh list, so that it warms a
// connection before its first call.
func (m *snManager) onNATReport(ss *session, r *proto.NATReport) {
	if !proto.NeedsRelay(r.Type, proto.NATSymmetric) {
		return
	}
	m.mu.Lock()
	_, isNode := m.nodes[ss.name]
	m.mu.Unlock()
	if !isNode && m.dir.anyPromoted() {
		m.sendList(ss, "", nil, "your NAT ("+string(r.Type)+") needs a relay for some calls")
	}
}

// sendList sends ss its list (ref: the request's id, if any).
func (m *snManager) sendList(ss *session, ref string, exclude []string, reason string) {
	list := m.listFor(ss.name, exclude, reason)
	env, err := proto.New(proto.TypeSupernodes, ref, "", list)
	if err != nil {
		m.log.Error("signal: supernode list", "err", err)
		return
	}
	m.lists.Add(1)
	ss.sendEnv(env)
}

// broadcastLists sends a fresh list to every online user that is not a
// supernode candidate (after a promotion: more choice for everyone).
func (m *snManager) broadcastLists(_ string, reason string) {
	for _, ss := range m.userSessions(func(string) bool { return true }) {
		m.sendList(ss, "", nil, reason)
	}
}

// moveUsers sends a new list, without id, to every user id was assigned to.
func (m *snManager) moveUsers(id, reason string) {
	m.mu.Lock()
	users := map[string]bool{}
	for u, as := range m.assigned {
		if as[id] {
			users[u] = true
		}
	}
	m.mu.Unlock()
	for _, ss := range m.userSessions(func(u string) bool { return users[u] }) {
		m.sendList(ss, "", []string{id}, reason)
	}
}

// userSessions returns the online sessions of users (not supernodes)
// that match.
func (m *snManager) userSessions(match func(string) bool) []*session {
	m.mu.Lock()
	isNode := map[string]bool{}
	for id := range m.nodes {
		isNode[id] = true
	}
	m.mu.Unlock()
	s := m.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*session
	for name, ss := range s.local {
		if !isNode[name] && match(name) {
			out = append(out, ss)
		}
	}
	return out
}

// SupernodeCollector exports supernode promotion counters for Prometheus
// (cmd/ registers it next to Collector): supernodes by state, and
// registrations, promotions, refusals, demotions, lists sent and relay
// tokens minted.
func (s *Server) SupernodeCollector() prometheus.Collector { return snCollector{s.sn} }

type snCollector struct{ m *snManager }

var (
	descSNState  = prometheus.NewDesc("parley_signal_supernodes", "Registered supernodes by state.", []string{"state"}, nil)
	descSNEvents = prometheus.NewDesc("parley_signal_supernode_events_total", "Supernode decisions and credentials by kind.", []string{"event"}, nil)
)

func (c snCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSNState
	ch <- descSNEvents
}

func (c snCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	by := map[proto.SupernodeState]int{}
	m.mu.Lock()
	for _, n := range m.nodes {
		by[n.state]++
	}
	m.mu.Unlock()
	for _, st := range []proto.SupernodeState{proto.SupernodeProbing, proto.SupernodeWaiting, proto.SupernodePromoted, proto.SupernodeRefused, proto.SupernodeDemoted} {
		ch <- prometheus.MustNewConstMetric(descSNState, prometheus.GaugeValue, float64(by[st]), string(st))
	}
	for _, e := range []struct {
		n string
		v int64
	}{
		{"registration", m.registrations.Load()}, {"promotion", m.promotions.Load()}, {"refusal", m.refusals.Load()},
		{"demotion", m.demotions.Load()}, {"list", m.lists.Load()}, {"token", m.tokens.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(descSNEvents, prometheus.CounterValue, float64(e.v), e.n)
	}
}
