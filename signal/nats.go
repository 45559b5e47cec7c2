package signal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The server keeps its state in NATS (nats.io): routed messages travel on
// per-user subjects, and names, presence, offline mail and supernode
// decisions live in JetStream key-value buckets and streams. By default
// that NATS is a nats-server embedded in this process, its JetStream store
// under Config.DataDir, with no port open; several nodes' embedded servers
// can form a cluster (NATSConfig.ClusterListen, Routes), or the server can
// use an external NATS cluster (NATSConfig.URLs).

// NATSConfig says where the server keeps its state. The zero value runs an
// embedded single-node server that opens no port.
type NATSConfig struct {
	// URLs of an external NATS server or cluster with JetStream enabled
	// (nats://host:4222). Empty runs an embedded nats-server in this
	// process: JetStream in Config.DataDir/nats, or in memory when DataDir
	// is empty.
	URLs []string
	// Options are extra nats.go options for an external server
	// (credentials, TLS).
	Options []nats.Option
	// ClusterListen is the host:port the embedded server accepts routes
	// from other nodes on (a NATS cluster port, conventionally 6222).
	// Empty opens no port: a single node. Port 0 picks one (ClusterAddr).
	ClusterListen string
	// Routes are the other nodes' cluster addresses (nats://host:6222).
	// A node may list itself; the embedded servers find each other.
	Routes []string
	// ClusterName names the cluster; every node must use the same. Empty
	// means "parley".
	ClusterName string
	// ClusterSecret, when set, is the password every node's routes must
	// present (all nodes set the same): without it anyone who reaches the
	// cluster port can join.
	ClusterSecret string
	// ServerName names this node's embedded server, unique in the cluster.
	// Empty derives one from ClusterListen, or "parley" for a single node.
	ServerName string
	// Replicas is how many copies JetStream keeps of every bucket and
	// stream. Zero means 1 for a single node or an external server, and
	// min(3, nodes) for an embedded cluster.
	Replicas int
	// StartTimeout bounds the wait for JetStream at New (a cluster needs a
	// quorum of its nodes up). Zero means 60 s.
	StartTimeout time.Duration
}

// Bucket, stream and subject names.
const (
	bucketUsers  = "parley_users"  // name -> userRec (names, keys, presence)
	bucketConf   = "parley_conf"   // shared settings (the relay token key)
	bucketLeases = "parley_leases" // short-lived ownership (janitor, probes)
	bucketSN     = "parley_sn"     // supernode id -> snRecord
	streamMail   = "PARLEY_MAIL"   // parley.mail.<to>.<from>: sealed messages
	streamRcpt   = "PARLEY_RCPT"   // parley.rcpt.<sender>: receipts waiting
	subjMail     = "parley.mail."
	subjRcpt     = "parley.rcpt."
	subjUser     = "parley.u."   // parley.u.<name>: routed frames, kicks, mail
	subjNode     = "parley.node" // node heartbeats
)

// leaseTTL is how long a lease lives without renewal.
const leaseTTL = 15 * time.Second

// nkey turns a user name into a subject token and KV key: names may hold
// '.', which NATS reads as a token separator, so it becomes '=' (a byte no
// name contains).
func nkey(name string) string { return strings.ReplaceAll(name, ".", "=") }

// unkey reverses nkey.
func unkey(k string) string { return strings.ReplaceAll(k, "=", ".") }

// state is the server's connection to NATS and its JetStream assets.
type state struct {
	log      *slog.Logger
	ns       *server.Server // the embedded server, nil with an external one
	nc       *nats.Conn
	js       jetstream.JetStream
	users    jetstream.KeyValue
	conf     jetstream.KeyValue
	leases   jetstream.KeyValue
	sn       jetstream.KeyValue
	mail     jetstream.Stream
	rcpt     jetstream.Stream
	storage  jetstream.StorageType
	replicas int
	cluster  bool   // other nodes may share this state
	tmpDir   string // an in-memory node's JetStream directory, removed at close
}

// openState starts (or connects to) NATS and creates the buckets and
// streams the server needs.
func openState(cfg *Config) (*state, error) {
	nc := cfg.NATS
	st := &state{log: cfg.Logger, storage: jetstream.FileStorage, replicas: nc.Replicas}
	if nc.StartTimeout == 0 {
		nc.StartTimeout = 60 * time.Second
	}
	if len(nc.URLs) > 0 {
		if nc.ClusterListen != "" || len(nc.Routes) > 0 {
			return nil, fmt.Errorf("%w: an external NATS (URLs) and an embedded cluster (ClusterListen, Routes) exclude each other", ErrBadConfig)
		}
		opts := append([]nats.Option{nats.Name("parley-signal"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, nc.Options...)
		conn, err := nats.Connect(strings.Join(nc.URLs, ","), opts...)
		if err != nil {
			return nil, fmt.Errorf("signal: connect to NATS %s: %w", strings.Join(nc.URLs, ","), err)
		}
		st.nc = conn
		st.cluster = true // other nodes may use the same NATS
		if st.replicas == 0 {
			st.replicas = 1
		}
	} else if err := st.startEmbedded(cfg, &nc); err != nil {
		return nil, err
	}
	js, err := jetstream.New(st.nc)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("signal: jetstream: %w", err)
	}
	st.js = js
	ctx, cancel := context.WithTimeout(context.Background(), nc.StartTimeout)
	defer cancel()
	if err := st.createAssets(ctx, cfg); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

// startEmbedded runs nats-server in this process.
func (st *state) startEmbedded(cfg *Config, nc *NATSConfig) error {
	dir := ""
	if cfg.DataDir != "" {
		dir = filepath.Join(cfg.DataDir, "nats")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("signal: data dir %s: %w", dir, err)
		}
	} else {
		// JetStream wants a directory even when every asset is in memory.
		d, err := os.MkdirTemp("", "parley-nats-")
		if err != nil {
			return fmt.Errorf("signal: temporary NATS dir: %w", err)
		}
		dir, st.tmpDir = d, d
		st.storage = jetstream.MemoryStorage
	}
	name := nc.ServerName
	if name == "" {
		name = "parley"
		if nc.ClusterListen != "" {
			name = "parley-" + strings.NewReplacer(":", "-", ".", "-", "[", "", "]", "").Replace(nc.ClusterListen)
		}
	}
	opts := &server.Options{
		ServerName: name,
		DontListen: true, // clients connect in process; no client port (see a cluster below)
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		// Frames are at most proto.MaxFrameSize; a mail fetch batches many.
		MaxPayload: 8 << 20,
		MaxPending: 64 << 20,
	}
	if nc.ClusterListen != "" {
		host, port, err := net.SplitHostPort(nc.ClusterListen)
		if err != nil {
			return fmt.Errorf("%w: cluster listen %q: %v", ErrBadConfig, nc.ClusterListen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("%w: cluster listen %q: %v", ErrBadConfig, nc.ClusterListen, err)
		}
		if p == 0 {
			p = -1 // nats-server's "pick a port"
		}
		cn := nc.ClusterName
		if cn == "" {
			cn = "parley"
		}
		opts.Cluster = server.ClusterOpts{Name: cn, Host: host, Port: p, ConnectRetries: -1}
		if nc.ClusterSecret != "" {
			opts.Cluster.Username, opts.Cluster.Password = "parley", nc.ClusterSecret
		}
		for _, r := range nc.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return fmt.Errorf("%w: cluster route %q: want nats://host:port", ErrBadConfig, r)
			}
			if nc.ClusterSecret != "" {
				u.User = url.UserPassword("parley", nc.ClusterSecret)
			}
			opts.Routes = append(opts.Routes, u)
		}
		// nats-server starts routing only after its client listener:
		// a clustered node listens for clients on loopback, on a random
		// port, with a random password only this process knows.
		opts.DontListen = false
		opts.Host, opts.Port = "127.0.0.1", -1
		opts.Username, opts.Password = "parley", newID()+newID()
		st.cluster = true
		if st.replicas == 0 {
			st.replicas = min(3, max(1, len(uniqueRoutes(nc.Routes, nc.ClusterListen))+1))
		}
	} else if len(nc.Routes) > 0 {
		return fmt.Errorf("%w: cluster routes need a cluster listen address", ErrBadConfig)
	}
	if st.replicas == 0 {
		st.replicas = 1
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("signal: nats-server: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{log: cfg.Logger.With("nats", name)}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("signal: the embedded nats-server did not start")
	}
	st.ns = ns
	conn, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("parley-signal"), nats.MaxReconnects(-1),
		nats.UserInfo(opts.Username, opts.Password))
	if err != nil {
		ns.Shutdown()
		return fmt.Errorf("signal: connect to the embedded nats-server: %w", err)
	}
	st.nc = conn
	return nil
}

// uniqueRoutes counts the routes that are not this node itself.
func uniqueRoutes(routes []string, self string) []string {
	var out []string
	for _, r := range routes {
		u, err := url.Parse(r)
		if err == nil && u.Host != self {
			out = append(out, r)
		}
	}
	return out
}

// createAssets creates (or updates) every bucket and stream, waiting for
// JetStream to be ready (a cluster's meta leader to be elected).
func (st *state) createAssets(ctx context.Context, cfg *Config) error {
	kv := func(c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
		c.Storage, c.Replicas = st.storage, st.replicas
		var b jetstream.KeyValue
		err := retry(ctx, func(ctx context.Context) (err error) {
			b, err = st.js.CreateOrUpdateKeyValue(ctx, c)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("signal: bucket %s: %w", c.Bucket, err)
		}
		return b, nil
	}
	stream := func(c jetstream.StreamConfig) (jetstream.Stream, error) {
		c.Storage, c.Replicas, c.AllowDirect = st.storage, st.replicas, true
		var s jetstream.Stream
		err := retry(ctx, func(ctx context.Context) (err error) {
			s, err = st.js.CreateOrUpdateStream(ctx, c)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("signal: stream %s: %w", c.Name, err)
		}
		return s, nil
	}
	// First JetStream itself: in a cluster, a request before the meta
	// leader is elected goes unanswered.
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := st.js.AccountInfo(actx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("signal: JetStream not ready (a cluster needs a quorum of its nodes): %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// All at once: in a cluster each new replicated asset elects its own
	// leader, which takes seconds.
	lim := cfg.Offline
	var wg sync.WaitGroup
	errs := make([]error, 6)
	do := func(i int, f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f() }()
	}
	do(0, func() (err error) {
		st.users, err = kv(jetstream.KeyValueConfig{Bucket: bucketUsers, Description: "Parley names, keys and presence"})
		return err
	})
	do(1, func() (err error) {
		st.conf, err = kv(jetstream.KeyValueConfig{Bucket: bucketConf, Description: "Parley shared settings"})
		return err
	})
	do(2, func() (err error) {
		st.leases, err = kv(jetstream.KeyValueConfig{Bucket: bucketLeases, Description: "Parley leases", TTL: leaseTTL})
		return err
	})
	do(3, func() (err error) {
		st.sn, err = kv(jetstream.KeyValueConfig{Bucket: bucketSN, Description: "Parley supernode decisions"})
		return err
	})
	do(4, func() (err error) {
		st.mail, err = stream(jetstream.StreamConfig{
			Name:        streamMail,
			Description: "Parley sealed offline messages: parley.mail.<to>.<from>",
			Subjects:    []string{subjMail + "*.*"},
			// Per-subject limit = per sender within a mailbox; a full one
			// refuses the new message (the sender's client holds it).
			MaxMsgsPerSubject:    int64(lim.MaxPerSender),
			Discard:              jetstream.DiscardNew,
			DiscardNewPerSubject: true,
			MaxAge:               lim.MaxAge,
			MaxBytes:             cfg.StoreBudget / 2,
			MaxMsgSize:           int32(lim.MaxMessageBytes*2 + 4096),
			Duplicates:           min(2*time.Minute, lim.MaxAge),
		})
		return err
	})
	do(5, func() (err error) {
		st.rcpt, err = stream(jetstream.StreamConfig{
			Name:              streamRcpt,
			Description:       "Parley receipts for senders who are offline: parley.rcpt.<sender>",
			Subjects:          []string{subjRcpt + "*"},
			MaxMsgsPerSubject: int64(lim.MaxReceipts),
			Discard:           jetstream.DiscardOld,
			MaxAge:            lim.MaxAge,
			MaxBytes:          cfg.StoreBudget / 8,
			MaxMsgSize:        4096,
		})
		return err
	})
	wg.Wait()
	return errors.Join(errs...)
}

// retry runs f until it succeeds or ctx ends: JetStream answers
// "unavailable" until a cluster has elected its leaders.
func retry(ctx context.Context, f func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		// In a cluster, of several nodes creating one asset at once some
		// may get no answer: ask again soon.
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

// transient reports whether err may go away by itself: JetStream not yet
// ready, no leader yet, a timeout. A refused configuration does not.
func transient(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return true
		}
		msg := strings.ToLower(api.Description)
		return strings.Contains(msg, "unavailable") || strings.Contains(msg, "no suitable peers") ||
			strings.Contains(msg, "insufficient resources") || strings.Contains(msg, "leader") || strings.Contains(msg, "timeout")
	}
	return true // timeouts, no responders, a connection still coming up
}

// close disconnects and stops the embedded server.
func (st *state) close() {
	if st.nc != nil {
		st.nc.Close()
	}
	if st.ns != nil {
		st.ns.Shutdown()
		st.ns.WaitForShutdown()
	}
	if st.tmpDir != "" {
		os.RemoveAll(st.tmpDir)
	}
}

// clusterAddr is the embedded server's route address, if it listens.
func (st *state) clusterAddr() net.Addr {
	if st.ns == nil {
		return nil
	}
	a := st.ns.ClusterAddr()
	if a == nil {
		return nil
	}
	return a
}

// directMsg is one message read by a direct get.
type directMsg struct {
	subject string
	seq     uint64
	data    []byte
}

// errNoMessages is a direct get that matched nothing.
var errNoMessages = errors.New("no messages")

// directBatch reads up to max messages of stream whose subject matches
// filter (wildcards allowed), from sequence from on, in order, with one
// JetStream direct-get request (the stream allows direct gets, so any
// replica answers, even while the stream has no leader).
func (st *state) directBatch(ctx context.Context, stream, filter string, from uint64, limit int) ([]directMsg, error) {
	inbox := st.nc.NewInbox()
	// A channel as large as the batch (SubscribeSync's default would
	// allocate half a megabyte per call).
	ch := make(chan *nats.Msg, limit+2)
	sub, err := st.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	req := fmt.Sprintf(`{"next_by_subj":%q,"seq":%d,"batch":%d}`, filter, max(from, 1), limit)
	if err := st.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, []byte(req)); err != nil {
		return nil, err
	}
	var out []directMsg
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return out, fmt.Errorf("direct get %s %s: %w", stream, filter, ctx.Err())
		}
		if status := m.Header.Get("Status"); status != "" {
			switch status {
			case "404":
				if len(out) == 0 {
					return nil, nil
				}
				return out, nil
			case "204": // end of batch
				return out, nil
			default:
				return out, fmt.Errorf("direct get %s %s: status %s %s", stream, filter, status, m.Header.Get("Description"))
			}
		}
		seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		out = append(out, directMsg{subject: m.Header.Get(jetstream.SubjectHeader), seq: seq, data: m.Data})
		if len(out) >= limit {
			// The end-of-batch marker follows; it carries nothing we need.
			return out, nil
		}
	}
}

// natsLogger sends nats-server's log lines to slog (warnings and errors at
// their level, notices at debug: they are the embedded server's business).
type natsLogger struct{ log *slog.Logger }

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any)  {}
