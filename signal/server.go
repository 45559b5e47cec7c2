package signal

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
	"golang.org/x/time/rate"
)

// Config configures a Server. The zero value of every field is usable.
type Config struct {
	// Listen is the TCP address Run listens on. Empty means 127.0.0.1:8080;
	// port 0 picks a free port (see Server.Addr).
	Listen string
	// DataDir holds the embedded NATS server's JetStream store (names,
	// presence, offline mail). Empty keeps it in memory, so name bindings
	// last only as long as the process. A signal.db left by an earlier
	// version is migrated into it once (migrate.go).
	DataDir string
	// NATS says where the state lives: an embedded nats-server (the zero
	// value; optionally clustered with other nodes) or an external one.
	NATS NATSConfig
	// NodeName names this node in logs and heartbeats. Empty means the
	// embedded server's name, or "parley".
	NodeName string
	// StoreBudget bounds the bytes the store may hold (names, offline mail,
	// receipts): past it no new name is registered and no new mail
	// stored, with an over_budget error saying so (limits.go). Zero means
	// 1 GiB.
	StoreBudget int64
	// Registration bounds new names per source address and expires names
	// never used (limits.go); the zero value takes the defaults.
	Registration RegistrationLimits
	// RecipientRate is how many routed messages per second one user may
	// receive from everyone together, RecipientBurst at once; past it the
	// senders get rate_limited. Zero means 100/s with a burst of 400.
	RecipientRate  float64
	RecipientBurst int
	// Directory is what the directory lists (directory.go): every
	// registered name (the zero value), only people online, or nothing.
	Directory DirectoryMode
	// MaxContacts is how many contacts one session may watch. Zero means
	// 1000.
	MaxContacts int
	// ICEServers returns the ICE servers handed to an authenticated user
	// in the welcome message. Nil hands out none.
	ICEServers func(name string) []proto.ICEServer
	// Web, when set, serves every path the server does not (the call page).
	Web http.Handler
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// AllowedOrigins lists extra browser origins (scheme://host:port) allowed
	// to open the WebSocket, e.g. the https:// origin of a TLS-terminating
	// proxy in front. Non-browser clients (no Origin header) are always
	// allowed; a page of this server's own is allowed when its origin
	// passes checkOrigin.
	AllowedOrigins []string
	// PublicHosts are the DNS names this server is reached under (its
	// --public-host, certificate names). A browser page under another
	// name is refused the WebSocket: it may be an attacker's name rebound
	// to this server's address (DNS rebinding). IP literals and localhost
	// cannot be rebound and need no listing.
	PublicHosts []string
	// AuthTimeout bounds the time from connect to a valid auth. Zero means 10 s.
	AuthTimeout time.Duration
	// PingInterval is how often the server pings an idle connection; a
	// connection silent for 3 intervals is dropped. Zero means 20 s.
	PingInterval time.Duration
	// WriteTimeout bounds one frame write: a client that does not read for
	// this long is disconnected. Zero means 10 s.
	WriteTimeout time.Duration
	// RateLimit is the sustained messages per second one connection may
	// send, RateBurst the burst. Zero means 50/s with a burst of 200 (a
	// call's trickled candidates arrive in a burst).
	RateLimit float64
	RateBurst int
	// MaxViolations is how many rate-limit or protocol errors a connection
	// may cause before it is closed. Zero means 100.
	MaxViolations int
	// SendQueue and SendQueueBytes bound what may wait to be written to
	// one connection; a client that lets more pile up is disconnected.
	// Zero means 4096 frames and 2 MiB.
	SendQueue      int
	SendQueueBytes int
	// Offline bounds the store of sealed messages waiting for offline
	// users (offline.go); zero fields take its defaults.
	Offline OfflineLimits
	// Supernodes configures supernode promotion and relay credentials
	// (supernodes.go); the zero value accepts candidates with defaults.
	Supernodes SupernodeConfig
	// Logger receives lifecycle and problem logs. Nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 20 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.RateLimit == 0 {
		c.RateLimit = 50
	}
	if c.RateBurst == 0 {
		c.RateBurst = 200
	}
	if c.MaxViolations == 0 {
		c.MaxViolations = 100
	}
	if c.SendQueue == 0 {
		c.SendQueue = 4096
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = 2 << 20
	}
	if c.MaxContacts == 0 {
		c.MaxContacts = 1000
	}
	if c.StoreBudget == 0 {
		c.StoreBudget = 1 << 30
	}
	c.Registration.setDefaults()
	if c.RecipientRate == 0 {
		c.RecipientRate = 100
	}
	if c.RecipientBurst == 0 {
		c.RecipientBurst = 400
	}
	c.Offline.setDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Server is a signaling server: one node. Create it with New, serve it
// with Run (or mount Handler yourself), stop it with Close.
type Server struct {
	cfg      Config
	log      *slog.Logger
	st       *state   // NATS and JetStream (nats.go)
	inc      string   // this process's incarnation (nodes.go)
	nodes    *nodes   // which incarnations are alive (nodes.go)
	users    *users   // names, keys, presence (users.go)
	router   *router  // routed frames across nodes (route.go)
	watches  *watches // who hears whose presence (presence.go)
	dir      dirIndex // names in order, for the directory (directory.go)
	offline  *mailbox // sealed messages for offline users (offline.go)
	sn       *snManager
	regLimit *regLimiter // new names per address (limits.go)
	usage    storeUsage  // the store's size, cached (limits.go)
	upgrader websocket.Upgrader
	origins  map[string]bool
	// publicHosts are Config.PublicHosts, lower-cased.
	publicHosts map[string]bool

	// Stats are the server's counters, read by Stats and /metrics.
	stats Stats

	bg sync.WaitGroup // background goroutines: watches, writers, heartbeats

	// presLocks order the presence a user's sign-ins and sign-outs on this
	// node announce (by name): a quick reconnect's "online" never comes
	// before the old session's "offline".
	presLocks [64]sync.Mutex

	mu     sync.RWMutex        // guards the fields below
	local  map[string]*session // authenticated sessions on this node, by name
	all    map[*session]struct{}
	ln     net.Listener
	closed bool
	wg     sync.WaitGroup // session goroutines
	stop   chan struct{}  // closed by Close: ends the pinger
}

// New validates cfg, fills defaults, starts (or connects to) NATS and
// loads the state.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.RateLimit < 0 || cfg.RateBurst < 1 {
		return nil, fmt.Errorf("%w: rate limit must be positive", ErrBadConfig)
	}
	switch cfg.Directory {
	case DirectoryAll, DirectoryOnline, DirectoryOff:
	default:
		return nil, fmt.Errorf("%w: directory %q is not \"\", \"online\" or \"off\"", ErrBadConfig, cfg.Directory)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		inc:     newIncarnation(),
		local:   map[string]*session{},
		all:     map[*session]struct{}{},
		origins: map[string]bool{},
		stop:    make(chan struct{}),
	}
	for _, o := range cfg.AllowedOrigins {
		s.origins[o] = true
	}
	s.publicHosts = map[string]bool{}
	for _, h := range cfg.PublicHosts {
		s.publicHosts[strings.ToLower(h)] = true
	}
	st, err := openState(&s.cfg)
	if err != nil {
		return nil, err
	}
	s.st = st
	if s.cfg.NodeName == "" {
		s.cfg.NodeName = "parley"
		if st.ns != nil {
			s.cfg.NodeName = st.ns.Name()
		}
	}
	s.log = s.log.With("node", s.cfg.NodeName)
	s.regLimit = &regLimiter{lim: s.cfg.Registration, addrs: map[string]*rate.Limiter{}}
	s.nodes = newNodes(s, s.inc)
	s.users = newUsers(s)
	s.router = newRouter(s)
	s.watches = newWatches(s)
	s.offline = newMailbox(s, s.cfg.Offline)
	sn, err := newSNManager(s, s.cfg.Supernodes)
	if err != nil {
		st.close()
		return nil, err
	}
	s.sn = sn
	fail := func(err error) (*Server, error) {
		s.sn.close()
		s.users.stop()
		s.router.close()
		st.close()
		s.bg.Wait()
		return nil, err
	}
	if err := s.migrate(); err != nil { // a signal.db from before NATS (migrate.go)
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s.router.start()
	if err := s.users.start(ctx); err != nil {
		return fail(err)
	}
	if err := s.sn.dir.start(ctx); err != nil { // sndir.go
		return fail(err)
	}
	if err := s.nodes.start(); err != nil {
		return fail(fmt.Errorf("signal: heartbeats: %w", err))
	}
	s.upgrader = websocket.Upgrader{
		// Frames are read straight from the connection (wsread.go):
		// gorilla's read buffer is never used, so it is the least it
		// takes; write buffers are lent only while writing.
		ReadBufferSize:  128,
		WriteBufferPool: &writeBufferPool,
		CheckOrigin:     s.checkOrigin,
	}
	s.bg.Add(1)
	go s.pingLoop()
	return s, nil
}

// writeBufferPool lends write buffers to connections only while they write.
var writeBufferPool sync.Pool

// pingSlots is how many parts each PingInterval is cut into: a session is
// pinged in its own part, so the pings (and their pongs) of thousands of
// connections never arrive in one burst that holds up routing.
const pingSlots = 16

// pingLoop pings every connection each PingInterval (through its queue),
// so idle connections need no timer or goroutine of their own; each tick
// pings the sessions of one slot.
func (s *Server) pingLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.PingInterval / pingSlots)
	defer t.Stop()
	var all []*session
	for slot := uint8(0); ; slot = (slot + 1) % pingSlots {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		all = all[:0]
		s.mu.RLock()
		for ss := range s.all {
			if ss.pingSlot == slot {
				all = append(all, ss)
			}
		}
		s.mu.RUnlock()
		for _, ss := range all {
			ss.enqueue(nil)
		}
		clear(all)
	}
}

// ClusterAddr is the address the embedded NATS server accepts routes from
// other nodes on, or nil when it does not (a single node, an external NATS).
func (s *Server) ClusterAddr() net.Addr { return s.st.clusterAddr() }

// checkOrigin decides whether a browser page may open the WebSocket (the
// Origin header; non-browser clients send none). Beside the configured
// AllowedOrigins, a page must be this server's own: the scheme of the
// connection (https when it is TLS), the request's host:port, and a host
// that cannot be rebound to this server by someone else's DNS: one of
// PublicHosts, an IP literal, or localhost.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if s.origins[origin] {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if u.Scheme != scheme {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if _, err := netip.ParseAddr(host); err == nil || host == "localhost" {
		return true
	}
	return s.publicHosts[host]
}

// Handler serves /ws (the signaling WebSocket), /healthz, /api/ice (STUN
// URLs, see ice.go), /metrics (when
// Config.Metrics is set) and, for every other path, Config.Web.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/healthz", s.serveHealth)
	mux.HandleFunc("/api/ice", s.serveICE)
	if s.cfg.Metrics != nil {
		mux.Handle("/metrics", s.cfg.Metrics)
	}
	if s.cfg.Web != nil {
		mux.Handle("/", s.cfg.Web)
	}
	return mux
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	closed, n := s.closed, len(s.local)
	s.mu.RUnlock()
	if closed {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"status\":\"ok\",\"online\":%d}\n", n)
}

// Run listens on Config.Listen and serves until ctx is done or Close is
// called. It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("signal: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done or Close is called.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.ln = ln
	s.mu.Unlock()
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("signal: serving", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.Close()
			return fmt.Errorf("signal: serve: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs.Shutdown(sctx) // hijacked WebSockets are closed by Close below
	return s.Close()
}

// Addr returns the address Serve listens on, or nil before it starts.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close disconnects every client (with a shutting_down error), waits for
// their goroutines, writes their users offline and stops NATS. It is safe
// to call twice.
func (s *Server) Close() error {
	ln, sessions, ok := s.markClosed()
	if !ok {
		return nil
	}
	if ln != nil {
		ln.Close()
	}
	for _, ss := range sessions {
		ss.fail(proto.Errorf(proto.CodeShuttingDown, "server is shutting down"), websocket.CloseGoingAway)
	}
	s.wg.Wait()
	s.shutdown(true)
	return nil
}

// kill stops the node as a crash would (tests of a cluster losing a
// node): NATS first, so nothing more is written or said goodbye, then
// every connection cut without a close frame.
func (s *Server) kill() {
	ln, sessions, ok := s.markClosed()
	if !ok {
		return
	}
	s.st.close()
	if ln != nil {
		ln.Close()
	}
	for _, ss := range sessions {
		ss.conn.Close()
	}
	s.wg.Wait()
	s.shutdown(false)
}

// markClosed marks the server closed and returns its listener and
// sessions to end; false if it already was.
func (s *Server) markClosed() (net.Listener, []*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, false
	}
	s.closed = true
	close(s.stop)
	sessions := make([]*session, 0, len(s.all))
	for ss := range s.all {
		sessions = append(sessions, ss)
	}
	return s.ln, sessions, true
}

// shutdown stops the background parts after the sessions are gone:
// pending presence writes first (graceful), then NATS.
func (s *Server) shutdown(graceful bool) {
	s.sn.close()
	if graceful {
		s.nodes.close()
	} else {
		close(s.nodes.stop)
	}
	s.users.stop()
	s.router.close()
	s.bg.Wait()
	s.st.close()
}

// Online returns the names of the users signed in to this node, sorted.
func (s *Server) Online() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.local))
	for n := range s.local {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NATReport returns the last NAT report user sent, if signed in here.
func (s *Server) NATReport(user string) (*proto.NATReport, bool) {
	ss := s.localSession(user)
	if ss == nil {
		return nil, false
	}
	ss.mu.Lock() // ss.nat is written under ss.mu (handle.go)
	defer ss.mu.Unlock()
	if ss.nat == nil {
		return nil, false
	}
	r := *ss.nat
	return &r, true
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.stats.rejectedUpgrades.Add(1)
		s.log.Debug("signal: upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	ss := newSession(s, conn, r.RemoteAddr)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.all[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.connections.Add(1)
	go ss.readLoop() // the handler returns: the HTTP server's buffers go

}

func newChallenge() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
