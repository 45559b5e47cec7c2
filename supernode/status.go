package supernode

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/prometheus/client_golang/prometheus"
)

// stats are the supernode's counters.
type stats struct {
	quicConns           atomic.Int64
	relayStreams        atomic.Int64
	probes              atomic.Int64
	allocations         atomic.Int64
	badHello            atomic.Int64
	tokenMissing        atomic.Int64
	tokenInvalid        atomic.Int64
	tokenExpired        atomic.Int64
	tokenWrongSupernode atomic.Int64
	tokenMismatch       atomic.Int64
	notPromoted         atomic.Int64
	turnAuthFailures    atomic.Int64
	sessionsFull        atomic.Int64
	userOverQuota       atomic.Int64
	peerDenied          atomic.Int64
	deniedPackets       atomic.Int64
	sessionOverBudget   atomic.Int64
	bandwidthFull       atomic.Int64
	busy                atomic.Int64
	shed                atomic.Int64
	streamAllocRefused  atomic.Int64
	slowDrops           atomic.Int64
	sendErrors          atomic.Int64
	unboundDatagrams    atomic.Int64
	fastUDP             atomic.Int64
	bytesRelayed        atomic.Uint64
}

// Stats is a snapshot of the counters. Every refusal has its own counter.
type Stats struct {
	QUICConns    int64 `json:"quic_conns"`    // QUIC connections accepted
	RelayStreams int64 `json:"relay_streams"` // relay streams admitted to the TURN server
	Probes       int64 `json:"probes"`        // signaling-server probes answered
	Allocations  int64 `json:"allocations"`   // TURN allocations created (all transports)
	Sessions     int   `json:"sessions"`      // live TURN allocations now
	Pending      int   `json:"pending"`       // sessions admitted and waiting for their allocation
	Users        int   `json:"users"`         // distinct users with live allocations
	// BytesRelayed counts what the relay sent for its allocations, in
	// bytes on the wire (IP, UDP, TURN and QUIC framing included).
	BytesRelayed  uint64  `json:"bytes_relayed"`
	WireMbps      float64 `json:"wire_mbps"`     // the current rate of BytesRelayed
	FastPath      bool    `json:"fast_path"`     // the TURN UDP data plane (batched, lock-free) is on
	FastUDP       int64   `json:"fast_udp"`      // packets the TURN UDP data plane forwarded (both ways)
	DatagramsIn   uint64  `json:"datagrams_in"`  // ChannelData received as QUIC datagrams
	DatagramsOut  uint64  `json:"datagrams_out"` // ChannelData sent as QUIC datagrams
	StreamFrames  uint64  `json:"stream_frames"` // TURN messages received on relay streams
	BadHello      int64   `json:"bad_hello"`     // malformed first frame on a stream
	TokenMissing  int64   `json:"token_missing"` // stream without a relay token
	TokenInvalid  int64   `json:"token_invalid"` // forged or malformed token
	TokenExpired  int64   `json:"token_expired"`
	TokenOtherSN  int64   `json:"token_other_supernode"` // token minted for another supernode
	TokenMismatch int64   `json:"token_mismatch"`        // TURN username of another user than the stream's token
	NotPromoted   int64   `json:"not_promoted"`          // relay asked for while not promoted
	TURNAuthFail  int64   `json:"turn_auth_failures"`    // TURN requests with bad credentials
	SessionsFull  int64   `json:"sessions_full"`         // refused: MaxSessions reached
	UserOverQuota int64   `json:"user_over_quota"`       // refused: MaxAllocationsPerUser reached
	BandwidthFull int64   `json:"bandwidth_full"`        // refused: the new session would not fit MaxRelayMbps
	Busy          int64   `json:"busy"`                  // refused: the data plane's loop is saturated
	StreamRefused int64   `json:"stream_refused"`        // TURN Allocate refused on an admitted relay stream (should stay 0)
	PeerDenied    int64   `json:"peer_denied"`           // permissions refused by the peer policy
	DeniedPackets int64   `json:"denied_packets"`        // packets to this host's non-relay ports dropped
	SessionDrops  int64   `json:"session_drops"`         // packets dropped over a session's bandwidth
	Shed          int64   `json:"shed"`                  // whole flows ended because the total outgrew MaxRelayMbps
	SlowDrops     int64   `json:"slow_drops"`            // packets for pion dropped because it was behind
	SendErrors    int64   `json:"send_errors"`           // packets the kernel would not take (send buffer full)
	Unbound       int64   `json:"unbound"`               // ChannelData datagrams for no bound channel
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := &s.stats
	return Stats{
		QUICConns: st.quicConns.Load(), RelayStreams: st.relayStreams.Load(), Probes: st.probes.Load(),
		Allocations: st.allocations.Load(), Sessions: s.sessions(), Pending: s.pendingSessions(), Users: s.users.distinct(),
		BytesRelayed: st.bytesRelayed.Load(), WireMbps: s.gov.rate() / 1e6, FastPath: s.dp != nil, FastUDP: st.fastUDP.Load(), BadHello: st.badHello.Load(),
		DatagramsIn: s.relayCtr.DatagramsIn.Load(), DatagramsOut: s.relayCtr.DatagramsOut.Load(),
		StreamFrames: s.relayCtr.StreamFramesIn.Load(),
		TokenMissing: st.tokenMissing.Load(), TokenInvalid: st.tokenInvalid.Load(), TokenExpired: st.tokenExpired.Load(),
		TokenOtherSN: st.tokenWrongSupernode.Load(), TokenMismatch: st.tokenMismatch.Load(),
		NotPromoted: st.notPromoted.Load(), TURNAuthFail: st.turnAuthFailures.Load(),
		SessionsFull: st.sessionsFull.Load(), UserOverQuota: st.userOverQuota.Load(),
		BandwidthFull: st.bandwidthFull.Load(), Busy: st.busy.Load(), StreamRefused: st.streamAllocRefused.Load(),
		PeerDenied: st.peerDenied.Load(), DeniedPackets: st.deniedPackets.Load(),
		SessionDrops: st.sessionOverBudget.Load(), Shed: st.shed.Load(),
		SlowDrops: st.slowDrops.Load(), SendErrors: st.sendErrors.Load(), Unbound: st.unboundDatagrams.Load(),
	}
}

// Status is what the status page shows.
type Status struct {
	Name        string               `json:"name"`
	ID          string               `json:"id,omitempty"`
	State       proto.SupernodeState `json:"state"`
	Reason      string               `json:"reason"`
	Connected   bool                 `json:"connected"`
	Accepting   bool                 `json:"accepting"`
	PublicAddr  string               `json:"public_addr"`
	QUIC        string               `json:"quic"`
	TURNUDP     string               `json:"turn_udp,omitempty"`
	TURNTCP     string               `json:"turn_tcp,omitempty"`
	TURNTLS     string               `json:"turn_tls,omitempty"`
	Fingerprint string               `json:"fingerprint"`
	MaxSessions int                  `json:"max_sessions"`
	MaxMbps     float64              `json:"max_relay_mbps"`
	History     []Decision           `json:"history"`
	Stats       Stats                `json:"stats"`
	// StartedAt and UptimeS say how long this supernode has run (its
	// throughput now is Stats.WireMbps).
	StartedAt time.Time `json:"started_at"`
	UptimeS   int64     `json:"uptime_s"`
}

// Status returns the current state, the decisions so far and the counters.
func (s *Server) Status() Status {
	a := s.Addrs()
	str := func(ap interface{ IsValid() bool }, v string) string {
		if !ap.IsValid() {
			return ""
		}
		return v
	}
	st := Status{
		Name: s.cfg.Name, PublicAddr: s.public.String(), Fingerprint: s.fp,
		QUIC:    a.QUIC.String(),
		TURNUDP: str(a.TURNUDP, a.TURNUDP.String()), TURNTCP: str(a.TURNTCP, a.TURNTCP.String()), TURNTLS: str(a.TURNTLS, a.TURNTLS.String()),
		MaxSessions: s.cfg.MaxSessions, MaxMbps: s.cfg.MaxRelayMbps,
		Accepting: s.accepting.Load(), Stats: s.Stats(),
	}
	if p := s.promo.Load(); p != nil {
		st.ID = p.id
	}
	now := time.Now()
	s.mu.Lock()
	st.State, st.Reason, st.Connected = s.state, s.reason, s.connected
	st.History = append([]Decision(nil), s.history...)
	st.StartedAt, st.UptimeS = s.started, int64(now.Sub(s.started).Seconds())
	s.mu.Unlock()
	if st.State == "" {
		st.State, st.Reason = "unregistered", "waiting for the signaling server"
	}
	return st
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts":     func(t time.Time) string { return t.Format("2006-01-02 15:04:05") },
	"uptime": func(s int64) string { return (time.Duration(s) * time.Second).String() },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Parley supernode {{.Name}}</title>
<meta http-equiv="refresh" content="5">
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}td,th{padding:2px 8px;text-align:left}
.promoted{color:#060}.refused,.demoted{color:#a00}</style></head><body>
<h1>Supernode {{.Name}}</h1>
<p>State: <b class="{{.State}}">{{.State}}</b> — {{.Reason}}</p>
<p>Signaling: {{if .Connected}}connected{{else}}disconnected{{end}}; new sessions {{if .Accepting}}accepted{{else}}refused{{end}}.</p>
<table><tr><th>public</th><td>{{.PublicAddr}}</td></tr><tr><th>QUIC</th><td>{{.QUIC}}</td></tr>
<tr><th>TURN</th><td>udp {{.TURNUDP}} · tcp {{.TURNTCP}} · tls {{.TURNTLS}}</td></tr>
<tr><th>fingerprint</th><td><code>{{.Fingerprint}}</code></td></tr>
<tr><th>sessions</th><td>{{.Stats.Sessions}} of {{.MaxSessions}} ({{.Stats.Users}} users, {{.Stats.Pending}} waiting for an allocation)</td></tr>
<tr><th>relayed</th><td>{{printf "%.2f" .Stats.WireMbps}} of {{.MaxMbps}} Mbit/s on the wire; {{.Stats.BytesRelayed}} bytes so far</td></tr>
<tr><th>up</th><td>{{uptime .UptimeS}} (since {{ts .StartedAt}})</td></tr></table>
<h2>Decisions</h2><table>{{range .History}}<tr><td>{{ts .Time}}</td><td class="{{.State}}">{{.State}}</td><td>{{.Reason}}</td></tr>{{else}}<tr><td>none yet</td></tr>{{end}}</table>
<h2>Refusals</h2><table>
<tr><th>no token</th><td>{{.Stats.TokenMissing}}</td><th>forged token</th><td>{{.Stats.TokenInvalid}}</td></tr>
<tr><th>expired token</th><td>{{.Stats.TokenExpired}}</td><th>other supernode's token</th><td>{{.Stats.TokenOtherSN}}</td></tr>
<tr><th>TURN auth</th><td>{{.Stats.TURNAuthFail}}</td><th>not promoted</th><td>{{.Stats.NotPromoted}}</td></tr>
<tr><th>full</th><td>{{.Stats.SessionsFull}}</td><th>user over quota</th><td>{{.Stats.UserOverQuota}}</td></tr>
<tr><th>bandwidth full</th><td>{{.Stats.BandwidthFull}}</td><th>busy</th><td>{{.Stats.Busy}}</td></tr>
<tr><th>peer denied</th><td>{{.Stats.PeerDenied}}</td><th>flows shed</th><td>{{.Stats.Shed}}</td></tr>
<tr><th>session bandwidth drops</th><td>{{.Stats.SessionDrops}}</td><th>send buffer full</th><td>{{.Stats.SendErrors}}</td></tr>
</table><p><a href="/status.json">JSON</a></p></body></html>
`))

// StatusHandler serves the status page at / and the same as JSON at
// /status.json; cmd/ mounts it (and /metrics) on --status-addr.
func (s *Server) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, s.Status()); err != nil {
			http.Error(w, fmt.Sprint(err), http.StatusInternalServerError)
		}
	})
	return mux
}

// Collector exports the counters for Prometheus.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

var (
	descSessions = prometheus.NewDesc("parley_supernode_sessions", "Live relay sessions (TURN allocations).", nil, nil)
	descPromoted = prometheus.NewDesc("parley_supernode_promoted", "1 while the signaling server has this supernode promoted.", nil, nil)
	descBytes    = prometheus.NewDesc("parley_supernode_relayed_bytes_total", "Bytes the relay sent, counted on the wire (headers and framing included).", nil, nil)
	descPending  = prometheus.NewDesc("parley_supernode_pending_sessions", "Sessions admitted and waiting for their TURN allocation.", nil, nil)
	descRate     = prometheus.NewDesc("parley_supernode_wire_mbps", "Relay traffic now, Mbit/s on the wire (the budget's measure).", nil, nil)
	descEvents   = prometheus.NewDesc("parley_supernode_events_total", "Supernode events by kind.", []string{"event"}, nil)
	descRefusals = prometheus.NewDesc("parley_supernode_refusals_total", "Refused requests by reason.", []string{"reason"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descPending, descRate, descPromoted, descBytes, descEvents, descRefusals} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	promoted := 0.0
	if c.s.accepting.Load() {
		promoted = 1
	}
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(st.Sessions))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, st.WireMbps)
	ch <- prometheus.MustNewConstMetric(descPromoted, prometheus.GaugeValue, promoted)
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesRelayed))
	for _, e := range []struct {
		n string
		v int64
	}{{"quic_conn", st.QUICConns}, {"relay_stream", st.RelayStreams}, {"probe", st.Probes}, {"allocation", st.Allocations},
		{"fast_udp_packet", st.FastUDP}, {"datagram_in", int64(st.DatagramsIn)}, {"datagram_out", int64(st.DatagramsOut)}, {"stream_frame_in", int64(st.StreamFrames)}} {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(e.v), e.n)
	}
	for _, e := range []struct {
		n string
		v int64
	}{
		{"bad_hello", st.BadHello}, {"token_missing", st.TokenMissing}, {"token_invalid", st.TokenInvalid},
		{"token_expired", st.TokenExpired}, {"token_other_supernode", st.TokenOtherSN}, {"token_user_mismatch", st.TokenMismatch},
		{"not_promoted", st.NotPromoted}, {"turn_auth", st.TURNAuthFail}, {"sessions_full", st.SessionsFull},
		{"user_over_quota", st.UserOverQuota}, {"bandwidth_full", st.BandwidthFull}, {"busy", st.Busy},
		{"stream_allocate_refused", st.StreamRefused}, {"peer_denied", st.PeerDenied}, {"denied_packet", st.DeniedPackets},
		{"session_bandwidth", st.SessionDrops}, {"shed_bandwidth", st.Shed}, {"slow_path_full", st.SlowDrops},
		{"send_buffer_full", st.SendErrors}, {"unbound_channel", st.Unbound},
	} {
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(e.v), e.n)
	}
}
