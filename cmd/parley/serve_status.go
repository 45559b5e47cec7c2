package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/signal"
)

// serverStatus is what `parley serve` shows its operator at /status and
// /status.json: how many people are online (a count, never names — a
// public server is not a family lobby), what the server has done, and
// every supernode with its state and the reason for it. Keys are
// snake_case throughout.
type serverStatus struct {
	StartedAt   time.Time         `json:"started_at"`
	UptimeS     int64             `json:"uptime_s"`
	OnlineUsers int               `json:"online_users"`
	Counters    serveCounters     `json:"counters"`
	Mailboxes   mailboxStatus     `json:"mailboxes"`
	Supernodes  []supernodeStatus `json:"supernodes"`
}

// mailboxStatus is the offline mailboxes in counts and sizes, never names.
type mailboxStatus struct {
	Messages    int64  `json:"messages"`     // sealed messages waiting
	Bytes       int64  `json:"bytes"`        // what they take
	Mailboxes   int    `json:"mailboxes"`    // recipients with mail waiting
	Largest     int64  `json:"largest"`      // messages in the fullest mailbox
	StoreBytes  int64  `json:"store_bytes"`  // the whole store: mail, receipts, names
	StoreBudget int64  `json:"store_budget"` // --store-budget-mib
	Error       string `json:"error,omitempty"`
}

type serveCounters struct {
	Connections  int64 `json:"connections"`
	Logins       int64 `json:"logins"`
	AuthFailures int64 `json:"auth_failures"`
	Replaced     int64 `json:"replaced"`
	BadFrames    int64 `json:"bad_frames"`
	RateLimited  int64 `json:"rate_limited"`
	Routed       int64 `json:"routed"`
	Offline      int64 `json:"offline"`
	SlowClients  int64 `json:"slow_clients"`
}

type supernodeStatus struct {
	ID       string  `json:"id"`
	State    string  `json:"state"`
	Reason   string  `json:"reason"`
	Mbps     float64 `json:"mbps"`
	RTTms    float64 `json:"rtt_ms"`
	Sessions int     `json:"sessions"`
	QUIC     string  `json:"quic"`
}

// statusSource reads the running server (set once it exists).
type statusSource struct {
	started time.Time
	srv     atomic.Pointer[signal.Server]

	mu     sync.Mutex // guards mail, mailAt
	mail   mailboxStatus
	mailAt time.Time
}

// mailboxEvery is how often the status page reads the mail stream's
// per-recipient counts (one subject per mailbox: not per page view).
const mailboxEvery = 10 * time.Second

// mailboxes is the mailbox status, read at most every mailboxEvery.
func (s *statusSource) mailboxes(srv *signal.Server) mailboxStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mailAt.IsZero() && time.Since(s.mailAt) < mailboxEvery {
		return s.mail
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if m, err := srv.MailboxStats(ctx); err != nil {
		s.mail = mailboxStatus{Error: err.Error()}
	} else {
		s.mail = mailboxStatus{Messages: m.Messages, Bytes: m.Bytes, Mailboxes: m.Mailboxes, Largest: m.Largest, StoreBytes: m.StoreBytes, StoreBudget: m.Budget}
	}
	s.mailAt = time.Now()
	return s.mail
}

func (s *statusSource) status() serverStatus {
	st := serverStatus{StartedAt: s.started, UptimeS: int64(time.Since(s.started).Seconds()), Supernodes: []supernodeStatus{}}
	srv := s.srv.Load()
	if srv == nil {
		return st
	}
	c := srv.Stats()
	st.OnlineUsers = c.Online
	st.Counters = serveCounters{Connections: c.Connections, Logins: c.Logins, AuthFailures: c.AuthFailures, Replaced: c.Replaced,
		BadFrames: c.BadFrames, RateLimited: c.RateLimited, Routed: c.Routed, Offline: c.Offline, SlowClients: c.SlowClients}
	st.Mailboxes = s.mailboxes(srv)
	for _, n := range srv.Supernodes() {
		st.Supernodes = append(st.Supernodes, supernodeStatus{ID: n.ID, State: string(n.State), Reason: n.Reason, Mbps: n.Mbps, RTTms: n.RTTms, Sessions: n.Sessions, QUIC: n.QUIC})
	}
	sort.Slice(st.Supernodes, func(i, j int) bool { return st.Supernodes[i].ID < st.Supernodes[j].ID })
	return st
}

var serverStatusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"uptime": func(s int64) string { return (time.Duration(s) * time.Second).String() },
	"ts":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"bytes":  client.HumanBytes,
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Parley server status</title>
<meta http-equiv="refresh" content="5">
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}td,th{padding:2px 8px;text-align:left}
.promoted{color:#060}.refused,.demoted{color:#a00}</style></head><body>
<h1>Parley server</h1>
<p>Up {{uptime .UptimeS}} (since {{ts .StartedAt}}). <b>{{.OnlineUsers}}</b> signed in now.</p>
<table>
<tr><th>connections</th><td>{{.Counters.Connections}}</td><th>sign-ins</th><td>{{.Counters.Logins}}</td></tr>
<tr><th>refused sign-ins</th><td>{{.Counters.AuthFailures}}</td><th>replaced sessions</th><td>{{.Counters.Replaced}}</td></tr>
<tr><th>messages routed</th><td>{{.Counters.Routed}}</td><th>to someone offline</th><td>{{.Counters.Offline}}</td></tr>
<tr><th>bad frames</th><td>{{.Counters.BadFrames}}</td><th>rate limited</th><td>{{.Counters.RateLimited}}</td></tr>
</table>
<h2>Offline mailboxes</h2>
{{with .Mailboxes}}{{if .Error}}<p>cannot read the store: {{.Error}}</p>{{else}}<p><b>{{.Messages}}</b> sealed messages ({{bytes .Bytes}}) wait in <b>{{.Mailboxes}}</b> mailboxes; the fullest holds {{.Largest}}. The store holds {{bytes .StoreBytes}} of its {{bytes .StoreBudget}} budget.</p>{{end}}{{end}}
<h2>Supernodes</h2><table><tr><th>id</th><th>state</th><th>why</th><th>Mbps</th><th>RTT</th><th>sessions</th></tr>
{{range .Supernodes}}<tr><td>{{.ID}}</td><td class="{{.State}}">{{.State}}</td><td>{{.Reason}}</td><td>{{printf "%.1f" .Mbps}}</td><td>{{printf "%.1f" .RTTms}} ms</td><td>{{.Sessions}}</td></tr>
{{else}}<tr><td colspan="6">none has offered yet</td></tr>{{end}}</table>
<p>Who is online is not shown here, only how many. <a href="/status.json">JSON</a> · <a href="/metrics">metrics</a></p>
</body></html>
`))

// withStatus serves /status and /status.json from src, and everything
// else from next (the call page).
func withStatus(next http.Handler, src *statusSource) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(src.status())
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := serverStatusPage.Execute(w, src.status()); err != nil {
			http.Error(w, fmt.Sprint(err), http.StatusInternalServerError)
		}
	})
	mux.Handle("/", next)
	return mux
}
