package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/relayconn"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
	"github.com/quic-go/quic-go"
)

// RelayConfig configures relaying through supernodes. The signaling server
// hands the client two or three supernodes, each with a relay token and
// TURN credentials minted for this user. For a call, the client offers the
// best of them to ICE as "turn:<quic address>?transport=tcp"; pion's ICE
// proxy dialer (SettingEngine.SetICEProxyDialer) then reaches it over a
// QUIC stream that carries TURN over TCP framing (RFC 8656 section 3.1),
// or, where UDP is blocked, over TLS to the supernode's TURN-TLS port.
// Both pin the certificate fingerprint the server published.
//
// The zero value relays when needed and pre-connects ("warms") a QUIC
// connection when the client's NAT report predicts relayed calls.
type RelayConfig struct {
	// Disabled ignores supernode lists (calls can still use TURN servers
	// from Config.ICEServers or the welcome).
	Disabled bool
	// ListenPacket opens the UDP socket of a QUIC connection to a
	// supernode. Nil means the system's network; tests give a network
	// namespace's.
	ListenPacket func(network, address string) (net.PacketConn, error)
	// AlwaysWarm pre-connects even when the NAT report does not predict
	// a relay.
	AlwaysWarm bool
	// DialTimeout bounds a QUIC or TLS connection attempt. Zero means 3 s.
	DialTimeout time.Duration
	// StreamsOnly keeps relayed media on the QUIC stream. By default
	// ChannelData (the media and chat packets) travels as QUIC datagrams
	// beside it, so a lost packet delays nothing behind it
	// (supernode/README.md has the measurement).
	StreamsOnly bool
}

// RelayEvent: the client picked (or lost) the supernode it relays through.
type RelayEvent struct {
	Supernode string        // id of the supernode now preferred; empty if none
	Transport string        // "quic" or "tls" (UDP unusable)
	RTT       time.Duration // QUIC handshake time, when measured
	Warm      bool          // a connection is open and ready
	Reason    string        // why (the server's list reason, a refusal, a failure)
}

func (RelayEvent) event() {}

// EventName is the event's public name.
func (RelayEvent) EventName() string { return "relay" }

// MarshalJSON gives the handshake time in milliseconds.
func (e RelayEvent) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Supernode string  `json:"supernode"`
		Transport string  `json:"transport"`
		RTTms     float64 `json:"rtt_ms"`
		Warm      bool    `json:"warm"`
		Reason    string  `json:"reason"`
	}{e.Supernode, e.Transport, round2(float64(e.RTT) / 1e6), e.Warm, e.Reason})
}

// relayer holds the supernode list and the QUIC connections to supernodes.
// It is used from the loop goroutine (updates) and from ICE's gathering
// goroutines (Dial), hence its own lock.
type relayer struct {
	c   *Client
	cfg RelayConfig

	mu        sync.Mutex // guards the fields below
	list      []proto.SupernodeInfo
	primary   string                    // id of the supernode offered to ICE
	names     map[netip.Addr]string     // every supernode IP seen -> id (for "via")
	services  map[netip.AddrPort]string // every supernode address seen (QUIC, TURN) -> id
	passwords map[string]string         // supernode id + " " + TURN username -> password, of recent lists (relayshim.go)
	conns     map[string]*relayConn     // open QUIC connections by supernode id
	retired   map[*relayConn]bool       // unlisted, closing after their last call
	rtt       map[string]time.Duration
	tlsOnly   bool // QUIC unusable from here: use TURN over TLS
	refresh   *time.Timer
	warmGen   int
	closed    bool
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // warm-up goroutines
	lastEvent RelayEvent
	ctr       relayconn.Counters // relay stream frames and datagrams
	// refusedAt: supernodes that refused us a relay stream (full, over
	// budget) recently; they are not offered to ICE until refusalCooldown
	// passes, and every list request excludes them.
	refusedAt map[string]time.Time
}

// refusalCooldown is how long a supernode that refused a relay stream is
// passed over (it may have room again later).
const refusalCooldown = 30 * time.Second

// refusedLocked reports whether id refused us within the cooldown.
func (r *relayer) refusedLocked(id string) bool {
	at, ok := r.refusedAt[id]
	return ok && time.Since(at) < refusalCooldown
}

// firstUsableLocked is the first listed supernode that has not refused us
// lately ("" if none).
func (r *relayer) firstUsableLocked() string {
	for _, sn := range r.list {
		if !r.refusedLocked(sn.ID) {
			return sn.ID
		}
	}
	return ""
}

// relayConn is one QUIC connection to a supernode.
type relayConn struct {
	conn *quic.Conn
	tr   *quic.Transport
	pc   net.PacketConn
	mux  *relayconn.Mux // nil when the connection has no datagrams

	// unanswered is when (unix ns) we first sent something the supernode
	// has not answered since (0: nothing outstanding). watchLocked
	// keeps it; relayshim.go and the dead-connection check read it.
	unanswered atomic.Int64

	// Guarded by relayer.mu:
	streams int  // relay streams open on it (calls using it)
	retired bool // no longer wanted: close when the last stream ends
}

// quietFor is how long the supernode has left what we sent unanswered.
func (rc *relayConn) quietFor(now time.Time) time.Duration {
	if u := rc.unanswered.Load(); u != 0 {
		return now.Sub(time.Unix(0, u))
	}
	return 0
}

func (rc *relayConn) close() {
	rc.conn.CloseWithError(0, "")
	rc.tr.Close()
	rc.pc.Close()
}

// retireLocked closes rc now if idle, else when its last stream closes:
// a supernode leaving the list (demoted, moved) must not cut a call that
// is still relayed through it. r.mu is held.
func (r *relayer) retireLocked(id string, rc *relayConn) {
	if r.conns[id] == rc {
		delete(r.conns, id)
	}
	if rc.streams == 0 {
		go rc.close()
		return
	}
	rc.retired = true
	r.retired[rc] = true
}

// trackedStream counts a relay stream on rc and closes a retired rc
// after its last one.
type trackedStream struct {
	*relayconn.Conn
	r     *relayer
	rc    *relayConn
	perms *permCache // refused peers, answered without a round trip (relayshim.go)
	once  sync.Once
}

// Write sends a TURN message, or answers a CreatePermission for a peer
// the supernode already refused itself.
func (t *trackedStream) Write(b []byte) (int, error) {
	if answer := t.perms.onWrite(b); answer != nil && t.Conn.Inject(answer) {
		return len(b), nil
	}
	return t.Conn.Write(b)
}

// Read returns one TURN message, noting the supernode's permission answers.
func (t *trackedStream) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	if n > 0 {
		t.perms.onRead(b[:n])
	}
	return n, err
}

func (t *trackedStream) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() {
		t.r.mu.Lock()
		t.rc.streams--
		last := t.rc.streams == 0 && t.rc.retired
		if last {
			delete(t.r.retired, t.rc)
		}
		t.r.mu.Unlock()
		if last {
			t.rc.close()
		}
	})
	return err
}

func newRelayer(c *Client) *relayer {
	cfg := c.cfg.Relay
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 3 * time.Second
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = func(network, address string) (net.PacketConn, error) {
			return net.ListenPacket(network, address) //nolint:noctx // bind only
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &relayer{
		c: c, cfg: cfg, ctx: ctx, cancel: cancel,
		names: map[netip.Addr]string{}, services: map[netip.AddrPort]string{}, passwords: map[string]string{}, conns: map[string]*relayConn{}, rtt: map[string]time.Duration{},
		retired: map[*relayConn]bool{},
	}
}

// close drops every connection and stops warm-ups (loop goroutine, at shutdown).
func (r *relayer) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	conns := make([]*relayConn, 0, len(r.conns)+len(r.retired))
	for _, rc := range r.conns {
		conns = append(conns, rc)
	}
	for rc := range r.retired {
		conns = append(conns, rc)
	}
	r.conns, r.retired = map[string]*relayConn{}, map[*relayConn]bool{}
	if r.refresh != nil {
		r.refresh.Stop()
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	for _, rc := range conns {
		rc.close()
	}
}

// onSupernodes takes a new list from the server (loop goroutine).
func (c *Client) onSupernodes(env *proto.Envelope) {
	l, err := proto.DecodeBody[*proto.SupernodeList](env)
	if err != nil || c.cfg.Relay.Disabled {
		return
	}
	c.relay.update(l, c.natType())
}

// natType is what the client knows of its NAT (loop goroutine).
func (c *Client) natType() proto.NATType {
	r := c.nat.report
	if r == nil {
		r = c.cfg.NATReport
	}
	if r == nil {
		return proto.NATUnknown
	}
	return r.Type
}

// needsRelay: the NAT report predicts that calls with some peers need a
// relay (against a symmetric NAT, the worst case).
func needsRelay(t proto.NATType) bool { return proto.NeedsRelay(t, proto.NATSymmetric) }

// update installs a list, picks the primary and warms it when useful.
func (r *relayer) update(l *proto.SupernodeList, nat proto.NATType) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.list = append([]proto.SupernodeInfo(nil), l.Supernodes...)
	if len(r.passwords) > 256 {
		clear(r.passwords) // links made long ago re-gather with the current list
	}
	ids := map[string]bool{}
	for _, sn := range r.list {
		ids[sn.ID] = true
		r.passwords[sn.ID+" "+sn.TURNUsername] = sn.TURNPassword // each supernode has its own secret
		for _, a := range []string{sn.QUIC, sn.TURNUDP, sn.TURNTCP, sn.TURNTLS} {
			if ap, err := netip.ParseAddrPort(a); err == nil {
				r.names[ap.Addr().Unmap()] = sn.ID
				r.services[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = sn.ID
			}
		}
	}
	// Connections to supernodes no longer listed go (demoted, moved),
	// once no call uses them.
	for id, rc := range r.conns {
		if !ids[id] {
			r.retireLocked(id, rc)
		}
	}
	if nat == proto.NATUDPBlocked {
		r.tlsOnly = true
	}
	moved := r.primary != "" && !ids[r.primary] // our supernode left the list
	r.primary = r.firstUsableLocked()           // least loaded, until RTTs say otherwise
	r.scheduleRefreshLocked()
	warm := len(r.list) > 0 && !r.tlsOnly && (r.cfg.AlwaysWarm || needsRelay(nat))
	r.warmGen++
	gen := r.warmGen
	var cands []proto.SupernodeInfo
	for _, sn := range r.list {
		if !r.refusedLocked(sn.ID) {
			cands = append(cands, sn)
		}
	}
	warm = warm && len(cands) > 0
	live := map[string]time.Duration{} // connections we keep: their handshake RTT
	for id, rc := range r.conns {
		if rc.conn.Context().Err() == nil {
			live[id] = r.rtt[id]
		}
	}
	ev := RelayEvent{Supernode: r.primary, Transport: r.transportLocked(), Reason: l.Reason}
	r.mu.Unlock()
	r.c.log.Debug("client: supernodes", "count", len(cands), "reason", l.Reason, "warm", warm)
	if !warm || moved {
		// Said at once when our supernode went (demoted, stopped): the
		// warm-up below may be overtaken by the next list.
		r.emit(ev)
	}
	if !warm {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.warm(gen, cands, live, l.Reason)
	}()
}

func (r *relayer) transportLocked() string {
	if r.tlsOnly {
		return "tls"
	}
	return "quic"
}

func (r *relayer) emit(ev RelayEvent) {
	r.mu.Lock()
	same := ev == r.lastEvent
	r.lastEvent = ev
	r.mu.Unlock()
	if !same {
		r.c.events.push(ev)
	}
}

// warmKeep is how many warm QUIC connections the client keeps: the
// primary and the supernode of a relayed call's standby pair (path.go).
const warmKeep = 2

// warm connects to every listed supernode it has no live connection to,
// at once, and keeps the warmKeep with the lowest handshake time (the
// RTT), the fastest as the primary; new connections that lose are closed,
// live ones are kept (a call may use them). When nothing answers over
// UDP, it falls back to TLS.
func (r *relayer) warm(gen int, cands []proto.SupernodeInfo, live map[string]time.Duration, reason string) {
	type result struct {
		id  string
		rc  *relayConn // nil for a live connection
		rtt time.Duration
		err error
	}
	results := make(chan result, len(cands))
	for _, sn := range cands {
		if rtt, ok := live[sn.ID]; ok {
			results <- result{id: sn.ID, rtt: rtt}
			continue
		}
		go func() {
			start := time.Now()
			rc, err := r.dialQUIC(r.ctx, sn)
			results <- result{id: sn.ID, rc: rc, rtt: time.Since(start), err: err}
		}()
	}
	var ok []result
	var errs []string
	for range cands {
		res := <-results
		if res.err != nil {
			errs = append(errs, res.id+": "+res.err.Error())
			continue
		}
		ok = append(ok, res)
	}
	sort.SliceStable(ok, func(i, j int) bool { return ok[i].rtt < ok[j].rtt })
	keep, drop := ok, []result(nil)
	if len(ok) > warmKeep {
		keep, drop = ok[:warmKeep], ok[warmKeep:]
	}
	closeFresh := func(rs []result) {
		for _, res := range rs {
			if res.rc != nil {
				res.rc.close()
			}
		}
	}
	r.mu.Lock()
	if r.closed || gen != r.warmGen {
		r.mu.Unlock()
		closeFresh(ok)
		return
	}
	closeFresh(drop)
	var ev RelayEvent
	if len(keep) == 0 {
		if r.ctx.Err() == nil {
			r.tlsOnly = true // no QUIC answer from any: UDP is unusable here
		}
		ev = RelayEvent{Supernode: r.primary, Transport: "tls", Reason: "no QUIC answer (" + strings.Join(errs, "; ") + "): relaying over TLS"}
	} else {
		for i, res := range keep {
			if res.rc == nil {
				continue // a live connection stays
			}
			if old := r.conns[res.id]; old != nil {
				if old.conn.Context().Err() == nil {
					// A call dialled it meanwhile (openStream) and may be
					// opening a stream on it: keep that one.
					res.rc.close()
					keep[i].rc = nil
					continue
				}
				r.retireLocked(res.id, old)
			}
			r.conns[res.id] = res.rc
			r.rtt[res.id] = res.rtt
			r.watchLocked(res.id, res.rc)
		}
		best := keep[0]
		r.primary = best.id
		ev = RelayEvent{Supernode: best.id, Transport: "quic", RTT: best.rtt, Warm: true, Reason: reason}
	}
	r.mu.Unlock()
	r.c.log.Info("client: relay ready", "supernode", ev.Supernode, "transport", ev.Transport, "rtt", ev.RTT, "warm", len(keep), "reason", ev.Reason)
	r.emit(ev)
}

// relayDeadAfter: a QUIC connection carrying relay streams whose
// supernode has left what we sent unanswered this long is closed as dead
// (a supernode killed or unplugged sends no CONNECTION_CLOSE). Closing it
// fails pion's pending TURN transactions at their next retransmission
// instead of after their 10-second timeout, and new ones at once. Long
// enough that a loaded machine does not close a live one; relayQuietAfter,
// much shorter, only makes the permission shim answer for it
// (relayshim.go).
const (
	relayDeadAfter  = 3 * time.Second
	relayQuietAfter = 500 * time.Millisecond
)

// watchLocked forgets a connection when it dies, follows whether its
// supernode answers what we send, and closes it when it carries relay
// streams but the supernode stopped answering.
func (r *relayer) watchLocked(id string, rc *relayConn) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var recv uint64
		var recvAt time.Time // when we last saw PacketsReceived grow
	watch:
		for {
			select {
			case <-rc.conn.Context().Done():
				break watch
			case <-r.ctx.Done():
				return
			case now := <-tick.C:
				if rc.mux == nil {
					continue // no lossy mux: nothing to measure with
				}
				// Something we sent after the last packet we received
				// has gone unacknowledged (relayconn.Mux.LastSend).
				st := rc.conn.ConnectionStats()
				switch last := rc.mux.LastSend(); {
				case st.PacketsReceived != recv:
					recv, recvAt = st.PacketsReceived, now
					rc.unanswered.Store(0)
				case last.After(recvAt) && rc.unanswered.Load() == 0:
					rc.unanswered.Store(last.UnixNano())
				}
				r.mu.Lock()
				busy := rc.streams > 0
				r.mu.Unlock()
				if q := rc.quietFor(now); busy && q >= relayDeadAfter {
					r.c.log.Warn("client: supernode stopped answering; closing its connection", "supernode", id, "quiet", q)
					rc.conn.CloseWithError(0, "unresponsive")
				}
			}
		}
		r.mu.Lock()
		if r.conns[id] == rc {
			delete(r.conns, id)
		}
		r.mu.Unlock()
		rc.close()
	}()
}

// scheduleRefreshLocked asks for a fresh list (new tokens) before the
// earliest token expires.
func (r *relayer) scheduleRefreshLocked() {
	if r.refresh != nil {
		r.refresh.Stop()
		r.refresh = nil
	}
	var first int64
	for _, sn := range r.list {
		if first == 0 || sn.Expires < first {
			first = sn.Expires
		}
	}
	if first == 0 {
		return
	}
	in := time.Until(time.Unix(first, 0)) * 8 / 10
	if in < time.Second {
		in = time.Second
	}
	r.refresh = time.AfterFunc(in, func() {
		r.c.box.post(func() { r.c.requestRelays(nil, "token refresh") })
	})
}

// requestRelays asks the server for a list without exclude (loop goroutine).
// Supernodes that refused us lately are always excluded.
func (c *Client) requestRelays(exclude []string, reason string) {
	r := c.relay
	r.mu.Lock()
	for id := range r.refusedAt {
		if r.refusedLocked(id) && !slices.Contains(exclude, id) {
			exclude = append(exclude, id)
		}
	}
	r.mu.Unlock()
	c.sendSig(proto.TypeRelayRequest, "", &proto.RelayRequest{Exclude: exclude, Reason: reason})
}

// iceServers returns the ICE servers for a new peer connection: base
// without the supernodes' own TURN servers (those are for browsers), plus
// up to n supernodes (the primary first, then the next best) reached
// through the proxy dialer.
func (r *relayer) iceServers(base []webrtc.ICEServer, n int) []webrtc.ICEServer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c.cfg.Relay.Disabled || len(r.list) == 0 {
		return base
	}
	out := make([]webrtc.ICEServer, 0, len(base)+n)
	for _, s := range base {
		if !r.isSupernodeServerLocked(s) {
			out = append(out, s)
		}
	}
	for _, sn := range r.rankedLocked() {
		if n <= 0 {
			break
		}
		n--
		out = append(out, webrtc.ICEServer{
			URLs:     []string{"turn:" + sn.QUIC + "?transport=tcp"},
			Username: sn.TURNUsername, Credential: sn.TURNPassword,
		})
	}
	return out
}

// rankedLocked is the list without the supernodes that refused us
// lately, the primary first, then the supernodes with a warm connection
// by handshake time, then the rest in the server's order (least loaded
// first).
func (r *relayer) rankedLocked() []proto.SupernodeInfo {
	var out []proto.SupernodeInfo
	for _, sn := range r.list {
		if !r.refusedLocked(sn.ID) {
			out = append(out, sn)
		}
	}
	rank := func(sn proto.SupernodeInfo) (int, time.Duration) {
		switch {
		case sn.ID == r.primary:
			return 0, 0
		case r.conns[sn.ID] != nil:
			return 1, r.rtt[sn.ID]
		}
		return 2, 0
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, ti := rank(out[i])
		rj, tj := rank(out[j])
		return ri < rj || ri == rj && ti < tj
	})
	return out
}

// isSupernodeServerLocked reports whether s is a supernode's TURN server
// as the server lists it for browsers: a turn: or turns: URL whose
// address is one a supernode advertised. Only the exact address counts:
// `parley serve`'s built-in supernode shares its IP with the STUN service,
// and that stun: URL is every client's way to its server-reflexive
// candidates (dropping it made calls that could go direct relay instead).
func (r *relayer) isSupernodeServerLocked(s webrtc.ICEServer) bool {
	for _, u := range s.URLs {
		scheme, rest, ok := strings.Cut(u, ":")
		if !ok || (scheme != "turn" && scheme != "turns") {
			continue
		}
		host, _, _ := strings.Cut(rest, "?")
		ap, err := netip.ParseAddrPort(host)
		if err != nil {
			continue
		}
		if _, ok := r.services[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]; ok {
			return true
		}
	}
	return false
}

// turnPassword is the password of a TURN username for supernode id from a
// recent list.
func (r *relayer) turnPassword(id, user string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.passwords[id+" "+user]
	return p, ok
}

// viaName turns a relay candidate address into the supernode's id.
func (r *relayer) viaName(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.names[ap.Addr().Unmap()]; ok {
		return id
	}
	return addr
}

// Dial implements proxy.Dialer for pion ICE: TURN-over-TCP connections to
// a supernode's QUIC address become QUIC relay streams (or TLS), anything
// else is dialled as plain TCP.
func (r *relayer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 2*r.cfg.DialTimeout)
	defer cancel()
	r.mu.Lock()
	var sn *proto.SupernodeInfo
	for i := range r.list {
		if r.list[i].QUIC == addr {
			cp := r.list[i]
			sn = &cp
		}
	}
	tlsOnly := r.tlsOnly
	r.mu.Unlock()
	if sn == nil {
		return r.dialTCP(ctx, network, addr)
	}
	if !tlsOnly {
		c, err := r.openStream(ctx, sn)
		if err == nil {
			return c, nil
		}
		var pe *proto.Error
		if errors.As(err, &pe) {
			r.refused(sn.ID, pe)
			return nil, err
		}
		r.c.log.Info("client: QUIC to supernode failed, trying TLS", "supernode", sn.ID, "err", err)
	}
	return r.dialTLS(ctx, sn)
}

// refused handles a supernode's refusal of a relay stream (full, over its
// bandwidth budget, not promoted): it stops offering that supernode to ICE
// at once — the next gathering (a new call, an ICE restart) uses the next
// one on the list, whose credentials the list already holds — and asks the
// server for a list without every supernode that refused us lately. A
// burst of refusals (calls set up together) makes one request.
func (r *relayer) refused(id string, pe *proto.Error) {
	r.mu.Lock()
	if r.refusedAt == nil {
		r.refusedAt = map[string]time.Time{}
	}
	again := r.refusedLocked(id)
	r.refusedAt[id] = time.Now()
	if r.primary == id || r.primary == "" {
		r.primary = r.firstUsableLocked()
	}
	next := r.primary
	var exclude []string
	for rid := range r.refusedAt {
		if r.refusedLocked(rid) {
			exclude = append(exclude, rid)
		}
	}
	sort.Strings(exclude)
	ev := RelayEvent{Supernode: next, Transport: r.transportLocked(), Reason: "refused by " + id + ": " + pe.Message}
	r.mu.Unlock()
	r.c.log.Warn("client: supernode refused relay", "supernode", id, "code", pe.Code, "reason", pe.Message, "next", next)
	if again {
		return // already moved off it and asked
	}
	r.c.box.post(func() {
		r.emit(ev)
		r.c.requestRelays(exclude, string(pe.Code)+": "+pe.Message)
	})
}

// openStream opens a relay stream on the (warm, or new) QUIC connection.
func (r *relayer) openStream(ctx context.Context, sn *proto.SupernodeInfo) (net.Conn, error) {
	r.mu.Lock()
	rc := r.conns[sn.ID]
	r.mu.Unlock()
	if rc == nil || rc.conn.Context().Err() != nil {
		var err error
		if rc, err = r.dialQUIC(ctx, *sn); err != nil {
			return nil, err
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			rc.close()
			return nil, ErrClosed
		}
		if old := r.conns[sn.ID]; old != nil && old.conn.Context().Err() == nil {
			rc.close()
			rc = old // someone else connected meanwhile
		} else {
			r.conns[sn.ID] = rc
			r.watchLocked(sn.ID, rc)
		}
		r.mu.Unlock()
	}
	st, err := rc.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: relay stream to %s: %w", sn.ID, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	fail := func(err error) (net.Conn, error) {
		st.CancelRead(0)
		st.CancelWrite(0)
		return nil, err
	}
	hello := &proto.RelayHello{Op: proto.RelayOpRelay, Token: sn.Token, Datagrams: rc.mux != nil && !r.cfg.StreamsOnly}
	if err := proto.WriteRelayFrame(st, hello); err != nil {
		return fail(fmt.Errorf("client: relay hello to %s: %w", sn.ID, err))
	}
	var reply proto.RelayReply
	if err := proto.ReadRelayFrame(st, &reply); err != nil {
		return fail(fmt.Errorf("client: relay reply from %s: %w", sn.ID, err))
	}
	if !reply.OK {
		return fail(reply.Error)
	}
	st.SetDeadline(time.Time{})
	var mux *relayconn.Mux
	if reply.Datagrams && hello.Datagrams {
		mux = rc.mux
	}
	// pion's TURN client asserts that LocalAddr is a *net.TCPAddr.
	local := net.TCPAddrFromAddrPort(addrPortOf(rc.conn.LocalAddr()))
	remote := net.TCPAddrFromAddrPort(addrPortOf(rc.conn.RemoteAddr()))
	r.mu.Lock()
	rc.streams++
	r.mu.Unlock()
	return &trackedStream{Conn: relayconn.New(st, mux, &r.ctr, local, remote), r: r, rc: rc,
		perms: newPermCache(func(user string) (string, bool) { return r.turnPassword(sn.ID, user) }, func() bool { return rc.quietFor(time.Now()) >= relayQuietAfter })}, nil
}

// dialQUIC connects to sn's QUIC listener from a fresh socket, pinning
// its certificate.
func (r *relayer) dialQUIC(ctx context.Context, sn proto.SupernodeInfo) (*relayConn, error) {
	ap, err := proto.ParseRelayAddr(sn.QUIC)
	if err != nil {
		return nil, err
	}
	network, bind := "udp4", "0.0.0.0:0"
	if ap.Addr().Is6() {
		network, bind = "udp6", "[::]:0"
	}
	pc, err := r.cfg.ListenPacket(network, bind)
	if err != nil {
		return nil, fmt.Errorf("client: socket for %s: %w", sn.ID, err)
	}
	tr := &quic.Transport{Conn: pc}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	conn, err := tr.Dial(dctx, net.UDPAddrFromAddrPort(ap), proto.PinnedTLSConfig(sn.Fingerprint, proto.RelayALPN),
		&quic.Config{HandshakeIdleTimeout: r.cfg.DialTimeout, MaxIdleTimeout: 60 * time.Second, KeepAlivePeriod: 15 * time.Second, EnableDatagrams: true})
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, fmt.Errorf("client: QUIC to %s at %s: %w", sn.ID, sn.QUIC, err)
	}
	rc := &relayConn{conn: conn, tr: tr, pc: pc}
	if d := conn.ConnectionState().SupportsDatagrams; d.Local && d.Remote {
		// Lossy: a supernode that vanishes must not stall the ICE agent
		// or the audio writing through it (they fail over instead).
		rc.mux = relayconn.NewLossyMux(conn, &r.ctr, 64) // stops when conn closes
	}
	return rc, nil
}

// dialTLS reaches sn's TURN-TLS listener (TURN over TLS, RFC 8656
// section 3.1), pinning its certificate: the path for UDP-blocked networks.
func (r *relayer) dialTLS(ctx context.Context, sn *proto.SupernodeInfo) (net.Conn, error) {
	if sn.TURNTLS == "" {
		return nil, fmt.Errorf("client: supernode %s offers no TLS and QUIC failed", sn.ID)
	}
	c, err := r.dialTCP(ctx, "tcp", sn.TURNTLS)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, proto.PinnedTLSConfig(sn.Fingerprint))
	hctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("client: TLS to supernode %s at %s: %w", sn.ID, sn.TURNTLS, err)
	}
	return tc, nil
}

func (r *relayer) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	if network == "tcp4" || network == "tcp6" || network == "" {
		network = "tcp"
	}
	if d := r.c.cfg.Dial; d != nil {
		return d(ctx, network, addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// Supernodes returns the supernodes the client may relay through, the
// preferred one first.
func (c *Client) Supernodes(ctx context.Context) ([]proto.SupernodeInfo, error) {
	var out []proto.SupernodeInfo
	err := c.do(ctx, func() error {
		r := c.relay
		r.mu.Lock()
		defer r.mu.Unlock()
		out = append(out, r.list...)
		sort.SliceStable(out, func(i, j int) bool { return out[i].ID == r.primary && out[j].ID != r.primary })
		return nil
	})
	return out, err
}
