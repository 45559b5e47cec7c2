package signal

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats holds the server's counters.
type Stats struct {
	connections      atomic.Int64
	logins           atomic.Int64
	authFailures     atomic.Int64
	replaced         atomic.Int64
	framesIn         atomic.Int64
	badFrames        atomic.Int64
	rateLimited      atomic.Int64
	spoofed          atomic.Int64
	routed           atomic.Int64
	offline          atomic.Int64
	errorsSent       atomic.Int64
	slowClients      atomic.Int64
	rejectedUpgrades atomic.Int64
	registrations    atomic.Int64
	expiredNames     atomic.Int64
	droppedReplies   atomic.Int64
}

// StatsSnapshot is a copy of the counters at one moment.
type StatsSnapshot struct {
	Online           int   // users signed in to this node
	Connections      int64 // WebSocket connections accepted
	Logins           int64 // successful auths
	AuthFailures     int64 // bad signatures and taken names
	Replaced         int64 // sessions replaced by a newer login of the same identity
	FramesIn         int64
	BadFrames        int64 // malformed, oversized, unknown type, invalid body
	RateLimited      int64
	Spoofed          int64
	Routed           int64 // client-to-client messages forwarded
	Offline          int64 // messages refused because the recipient was offline
	ErrorsSent       int64
	SlowClients      int64
	RejectedUpgrades int64
	Registrations    int64 // new names registered through this node
	ExpiredNames     int64 // names never used, expired by this node's janitor
	DroppedReplies   int64 // replies past even the reply limit (never violations)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() StatsSnapshot {
	s.mu.RLock()
	online := len(s.local)
	s.mu.RUnlock()
	st := &s.stats
	return StatsSnapshot{
		Online:           online,
		Connections:      st.connections.Load(),
		Logins:           st.logins.Load(),
		AuthFailures:     st.authFailures.Load(),
		Replaced:         st.replaced.Load(),
		FramesIn:         st.framesIn.Load(),
		BadFrames:        st.badFrames.Load(),
		RateLimited:      st.rateLimited.Load(),
		Spoofed:          st.spoofed.Load(),
		Routed:           st.routed.Load(),
		Offline:          st.offline.Load(),
		ErrorsSent:       st.errorsSent.Load(),
		SlowClients:      st.slowClients.Load(),
		RejectedUpgrades: st.rejectedUpgrades.Load(),
		Registrations:    st.registrations.Load(),
		ExpiredNames:     st.expiredNames.Load(),
		DroppedReplies:   st.droppedReplies.Load(),
	}
}

// Collector returns a Prometheus collector over the server's counters,
// for cmd/ to register on its /metrics registry.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

var (
	descOnline = prometheus.NewDesc("parley_signal_online_users", "Users signed in now.", nil, nil)
	descEvents = prometheus.NewDesc("parley_signal_events_total", "Signaling server events by kind.", []string{"event"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descOnline
	ch <- descEvents
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descOnline, prometheus.GaugeValue, float64(st.Online))
	for _, e := range []struct {
		name string
		v    int64
	}{
		{"connection", st.Connections}, {"login", st.Logins}, {"auth_failure", st.AuthFailures},
		{"replaced", st.Replaced}, {"frame_in", st.FramesIn}, {"bad_frame", st.BadFrames},
		{"rate_limited", st.RateLimited}, {"spoofed", st.Spoofed}, {"routed", st.Routed},
		{"offline", st.Offline}, {"error_sent", st.ErrorsSent}, {"slow_client", st.SlowClients},
		{"rejected_upgrade", st.RejectedUpgrades}, {"registration", st.Registrations},
		{"expired_name", st.ExpiredNames}, {"dropped_reply", st.DroppedReplies},
	} {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(e.v), e.name)
	}
}
