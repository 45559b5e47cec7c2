package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/internal/memnet"
	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
)

// parley bench signal: a load generator that signs in N real identities
// (Ed25519 keys, the hello/auth/welcome handshake) against a signaling
// server or cluster and routes messages among them, then reports sign-ins
// per second, the server's memory per connected user and routing latency.
//
// Against running servers (--server) it connects over TCP (one socket per
// user, so at most this process's file limit) and reads the servers'
// memory from their /metrics. Without --server it starts the node(s) in
// this process and connects over an in-memory network (internal/memnet),
// so it can hold 100,000 users whatever the file limit; the servers' share
// of the memory is told apart from the generator's by the allocation
// sites in the heap profile, plus every goroutine stack (idle generated
// users have none).

type benchSignalFlags struct {
	servers, metrics       string
	nodes                  int
	users                  []int
	rate                   int
	duration               time.Duration
	routers, workers       int
	jsonOut                bool
	dataDir, cpuProfile    string
	memProfile             string
	signinTimeout, settleT time.Duration
}

func runBenchSignal(ctx context.Context, args []string) error {
	return benchSignal(ctx, args, os.Stdout)
}

// benchSignal is parley bench signal, printing to out.
func benchSignal(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("bench signal", "[flags]", `
A load generator for the signaling server: signs in N real identities and
routes messages among them, then prints sign-ins per second, the servers'
memory per connected user and routing latency (p50/p99) at a given rate.

Without --server it starts --nodes signaling nodes in this process (three
form a cluster of their embedded NATS servers, JetStream replicas 3) and
connects over an in-memory network, so 100,000 users fit whatever the file
limit; the servers' memory is told apart from the generator's by allocation
site (heap profile) plus all goroutine stacks. With --server it connects to
running servers over TCP (users spread across them) and reads their memory
from /metrics.`)
	var f benchSignalFlags
	var users string
	fs.StringVar(&f.servers, "server", "", "running signaling servers (URL[,URL...]); empty starts --nodes in this process")
	fs.StringVar(&f.metrics, "metrics", "", "their /metrics URLs (default: each --server's http(s)://host/metrics)")
	fs.IntVar(&f.nodes, "nodes", 1, "nodes to start in this process (1, or 3 for a cluster)")
	fs.StringVar(&users, "users", "1000,10000", "connected users, one run per size (comma-separated)")
	fs.IntVar(&f.rate, "rate", 10000, "routed messages per second in the routing phase")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "length of the routing phase")
	fs.IntVar(&f.routers, "routers", 2000, "users that send and receive in the routing phase (half each)")
	fs.IntVar(&f.workers, "workers", 64, "concurrent sign-ins")
	fs.BoolVar(&f.jsonOut, "json", false, "print one JSON object per run")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the routing phase to this file")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a heap profile after the sign-ins to this file")
	fs.StringVar(&f.dataDir, "data", "", "data directory for in-process nodes (default: a temporary one, file storage as in production)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, u := range splitList(users) {
		n, err := strconv.Atoi(u)
		if err != nil || n < 2 {
			return fmt.Errorf("--users %q: want sizes of at least 2", users)
		}
		f.users = append(f.users, n)
	}
	if f.servers == "" && f.nodes != 1 && f.nodes != 3 {
		return errors.New("--nodes must be 1 or 3")
	}
	if f.rate < 0 || f.routers < 2 || f.workers < 1 {
		return errors.New("--rate must be >= 0, --routers >= 2, --workers >= 1")
	}
	runtime.MemProfileRate = 16 << 10 // finer heap samples: the servers' share is told by allocation site
	for _, n := range f.users {
		res, err := benchSignalRun(ctx, &f, n)
		if err != nil {
			return fmt.Errorf("%d users: %w", n, err)
		}
		res.print(out, f.jsonOut)
	}
	return nil
}

// benchSignalResult is one run's figures.
type benchSignalResult struct {
	Users, Nodes      int
	Where             string
	SignIn            time.Duration
	SignInsPerSec     float64
	ServerBytes       float64 // heap (server allocation sites) + goroutine stacks, or from /metrics
	ServerStacks      float64 // of which goroutine stacks (in process)
	ServerRSS         float64 // from /metrics (running servers) or the process (in process)
	Sent, Received    int
	Rate              float64
	P50, P99, Max     time.Duration
	CrossNodeFraction float64
}

func (r *benchSignalResult) print(w io.Writer, asJSON bool) {
	if asJSON {
		json.NewEncoder(w).Encode(map[string]any{
			"users": r.Users, "nodes": r.Nodes, "where": r.Where,
			"signin_s": r.SignIn.Seconds(), "signins_per_s": math.Round(r.SignInsPerSec),
			"server_kib_per_user": math.Round(r.ServerBytes/float64(r.Users)/1024*10) / 10,
			"server_mib":          math.Round(r.ServerBytes / (1 << 20)), "rss_mib": math.Round(r.ServerRSS / (1 << 20)),
			"stack_kib_per_user": math.Round(r.ServerStacks/float64(r.Users)/1024*10) / 10,
			"routed_sent":        r.Sent, "routed_received": r.Received, "routed_per_s": math.Round(r.Rate),
			"p50_ms": ms(r.P50), "p99_ms": ms(r.P99), "max_ms": ms(r.Max), "cross_node": r.CrossNodeFraction,
		})
		return
	}
	fmt.Fprintf(w, "%d users on %d node(s) (%s):\n", r.Users, r.Nodes, r.Where)
	fmt.Fprintf(w, "  sign-in: %d in %.1f s = %.0f/s\n", r.Users, r.SignIn.Seconds(), r.SignInsPerSec)
	fmt.Fprintf(w, "  server memory: %.0f MiB = %.1f KiB per user (%.1f KiB of it goroutine stacks; process RSS %.0f MiB)\n",
		r.ServerBytes/(1<<20), r.ServerBytes/float64(r.Users)/1024, r.ServerStacks/float64(r.Users)/1024, r.ServerRSS/(1<<20))
	if r.Sent > 0 {
		fmt.Fprintf(w, "  routing: %d sent, %d received at %.0f msgs/s; p50 %.2f ms, p99 %.2f ms, max %.1f ms (%.0f%% across nodes)\n",
			r.Sent, r.Received, r.Rate, ms(r.P50), ms(r.P99), ms(r.Max), r.CrossNodeFraction*100)
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*100) / 100 }

// benchTarget is where the generated users connect.
type benchTarget struct {
	urls    []string
	dialers []*websocket.Dialer
	nodes   []*signal.Server // in process
	stop    func()
}

// startBenchNodes starts n nodes in this process on an in-memory network.
func startBenchNodes(ctx context.Context, f *benchSignalFlags) (*benchTarget, error) {
	dir := f.dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "parley-bench-signal-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	t := &benchTarget{}
	var routes []string
	var ports []int
	if f.nodes > 1 {
		for range f.nodes {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
			ln.Close()
		}
		for _, p := range ports {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
		}
	}
	type started struct {
		srv *signal.Server
		err error
	}
	res := make([]started, f.nodes)
	var wg sync.WaitGroup
	for i := range f.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := signal.Config{
				DataDir: filepath.Join(dir, fmt.Sprint("node", i+1)),
				// Generated users answer no pings while idle; and the
				// generator signs in from one "address".
				PingInterval: time.Hour,
				Registration: signal.RegistrationLimits{PerAddr: 1 << 30},
			}
			if f.nodes > 1 {
				cfg.NATS = signal.NATSConfig{ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes, ServerName: fmt.Sprint("n", i+1), Replicas: 3}
			}
			srv, err := signal.New(cfg)
			res[i] = started{srv, err}
		}()
	}
	wg.Wait()
	var stops []func()
	for i, r := range res {
		if r.err != nil {
			for _, o := range res {
				if o.srv != nil {
					o.srv.Close()
				}
			}
			return nil, fmt.Errorf("node %d: %w", i+1, r.err)
		}
		l := memnet.Listen(fmt.Sprint("node", i+1), 64<<10)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.srv.Serve(sctx, l) }()
		stops = append(stops, func() { cancel(); <-done })
		t.nodes = append(t.nodes, r.srv)
		t.urls = append(t.urls, fmt.Sprintf("ws://node%d/ws", i+1))
		t.dialers = append(t.dialers, &websocket.Dialer{NetDialContext: l.DialContext, HandshakeTimeout: 30 * time.Second,
			ReadBufferSize: 1024, WriteBufferPool: &sync.Pool{}})
	}
	t.stop = func() {
		var wg sync.WaitGroup
		for _, s := range stops {
			wg.Add(1)
			go func() { defer wg.Done(); s() }()
		}
		wg.Wait()
		if f.dataDir == "" {
			os.RemoveAll(dir)
		}
	}
	return t, nil
}

// genUser is one generated user.
type genUser struct {
	name string
	node int
	ws   *websocket.Conn
}

// benchSignalRun signs in n users, measures memory, routes messages.
func benchSignalRun(ctx context.Context, f *benchSignalFlags, n int) (*benchSignalResult, error) {
	var t *benchTarget
	res := &benchSignalResult{Users: n}
	if f.servers == "" {
		var err error
		if t, err = startBenchNodes(ctx, f); err != nil {
			return nil, err
		}
		defer t.stop()
		res.Nodes, res.Where = f.nodes, "in this process, in-memory network"
	} else {
		t = &benchTarget{}
		for _, u := range splitList(f.servers) {
			t.urls = append(t.urls, sigdial.URL(u))
			t.dialers = append(t.dialers, &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferPool: &sync.Pool{}})
		}
		var lim syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && uint64(n)+64 > lim.Cur {
			return nil, fmt.Errorf("%d users need %d sockets; this process may open %d (ulimit -n): run the nodes in this process (no --server) for more", n, n, lim.Cur)
		}
		res.Nodes, res.Where = len(t.urls), "running servers over TCP"
	}

	// Keys first: the sign-ins are timed, not the key generation.
	keys := make([]ed25519.PrivateKey, n)
	for i := range keys {
		_, keys[i], _ = ed25519.GenerateKey(nil)
	}
	before, err := serverMemory(t, f)
	if err != nil {
		return nil, err
	}
	users := make([]*genUser, n)
	run := strings.ToLower(newRunID()) // names of this run: a running server keeps earlier runs' names
	work := make(chan int)
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range min(f.workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				u := &genUser{name: fmt.Sprintf("b%s-%07d", run, i), node: i % len(t.urls)}
				ws, err := genSignIn(ctx, t, u, keys[i])
				if err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("sign-in of %s: %w", u.name, err))
					continue
				}
				u.ws = ws
				users[i] = u
			}
		}()
	}
	for i := range n {
		if failed.Load() != nil || ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	res.SignIn = time.Since(start)
	defer func() {
		for _, u := range users {
			if u != nil && u.ws != nil {
				u.ws.Close()
			}
		}
	}()
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	res.SignInsPerSec = float64(n) / res.SignIn.Seconds()
	if t.nodes == nil {
		// Running servers ping: users that are not routers still read
		// (gorilla answers pings while reading), or they would be dropped.
		for _, u := range users[min(f.routers-f.routers%2, n):] {
			go func(ws *websocket.Conn) {
				for {
					if _, _, err := ws.NextReader(); err != nil {
						return
					}
				}
			}(u.ws)
		}
	}
	after, err := serverMemory(t, f)
	if err != nil {
		return nil, err
	}
	res.ServerBytes = after.bytes - before.bytes
	res.ServerStacks = after.stacks - before.stacks
	res.ServerRSS = after.rss
	if f.memProfile != "" {
		if pf, err := os.Create(f.memProfile); err == nil {
			pprof.Lookup("heap").WriteTo(pf, 0)
			pf.Close()
		}
	}
	if f.rate > 0 && f.duration > 0 {
		if err := routeLoad(ctx, f, users, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// genSignIn signs u in with key: hello, auth, welcome.
func genSignIn(ctx context.Context, t *benchTarget, u *genUser, key ed25519.PrivateKey) (*websocket.Conn, error) {
	ws, _, err := t.dialers[u.node].DialContext(ctx, t.urls[u.node], nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(proto.MaxFrameSize)
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	env, err := sigdial.Read(ws)
	if err != nil {
		ws.Close()
		return nil, err
	}
	h, err := proto.DecodeBody[*proto.Hello](env)
	if err != nil {
		ws.Close()
		return nil, err
	}
	if err := sigdial.Write(ws, proto.TypeAuth, "a", proto.SignAuth(key, h.Challenge, u.name)); err != nil {
		ws.Close()
		return nil, err
	}
	if env, err = sigdial.Read(ws); err != nil || env.Type != proto.TypeWelcome {
		ws.Close()
		return nil, fmt.Errorf("no welcome: %v %v", env, err)
	}
	ws.SetReadDeadline(time.Time{})
	return ws, nil
}

type memFigures struct{ bytes, stacks, rss float64 }

// serverMemory is what the servers hold: in this process, the heap
// allocated at server sites plus every goroutine stack; else their
// /metrics.
func serverMemory(t *benchTarget, f *benchSignalFlags) (memFigures, error) {
	if t.nodes != nil {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return memFigures{bytes: serverHeap() + float64(ms.StackInuse), stacks: float64(ms.StackInuse), rss: processRSS()}, nil
	}
	urls := splitList(f.metrics)
	if f.metrics == "" {
		urls = nil
		for _, u := range t.urls {
			u = strings.Replace(strings.Replace(u, "ws://", "http://", 1), "wss://", "https://", 1)
			urls = append(urls, strings.TrimSuffix(u, "/ws")+"/metrics")
		}
	}
	var out memFigures
	for _, u := range urls {
		m, err := scrape(u)
		if err != nil {
			return out, fmt.Errorf("metrics %s: %w", u, err)
		}
		out.bytes += m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"]
		out.rss += m["process_resident_memory_bytes"]
	}
	return out, nil
}

// scrape reads a Prometheus text page's unlabelled samples.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url) //nolint:noctx // a bench
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		if k, v, ok := strings.Cut(line, " "); ok {
			if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				out[k] = x
			}
		}
	}
	return out, nil
}

// serverPackages are the allocation sites that belong to the servers.
var serverPackages = []string{
	"github.com/parley-voice/parley/signal.",
	"github.com/nats-io/",
	"net/http.(*conn)", "net/http.(*Server)", "net/http.(*response)",
	"github.com/gorilla/websocket.(*Upgrader)",
}

// serverHeap estimates the in-use heap allocated at server sites, from
// the heap profile (as of the last GC), scaled for sampling like pprof.
func serverHeap() float64 {
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		n, ok = runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	total := 0.0
	for _, r := range recs {
		bytes, objs := r.InUseBytes(), r.InUseObjects()
		if bytes <= 0 || objs <= 0 || !isServerStack(r.Stack()) {
			continue
		}
		avg := float64(bytes) / float64(objs)
		total += float64(bytes) / (1 - math.Exp(-avg/rate))
	}
	return total
}

func isServerStack(pcs []uintptr) bool {
	frames := runtime.CallersFrames(pcs)
	for {
		fr, more := frames.Next()
		for _, p := range serverPackages {
			if strings.HasPrefix(fr.Function, p) {
				return true
			}
		}
		if !more {
			return false
		}
	}
}

// processRSS is this process's resident memory (Linux), or 0.
func processRSS() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(fields[1], 64)
	return pages * float64(os.Getpagesize())
}

// routeLoad has half the routers send to the other half at f.rate for
// f.duration (read receipts: a small routed frame; its id carries the
// send time) and measures send-to-receive latency.
func routeLoad(ctx context.Context, f *benchSignalFlags, users []*genUser, res *benchSignalResult) error {
	r := min(f.routers, len(users))
	r -= r % 2
	senders, receivers := users[:r/2], users[r/2:r]
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	cross := 0
	for i := range senders {
		if senders[i].node != receivers[i].node {
			cross++
		}
	}
	res.CrossNodeFraction = float64(cross) / float64(len(senders))
	for _, u := range users[:r] {
		wg.Add(1)
		ws := u.ws
		go func() { // every router reads: receipts arrive, acks and presence are drained
			defer wg.Done()
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				env, err := proto.Decode(data)
				if err != nil || env.Type != proto.TypeRead {
					continue
				}
				rc, err := proto.DecodeBody[*proto.Receipt](env)
				if err != nil || !strings.HasPrefix(rc.ID, "t") {
					continue
				}
				sent, err := strconv.ParseInt(rc.ID[1:], 10, 64)
				if err != nil {
					continue
				}
				d := time.Duration(time.Now().UnixNano() - sent)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(pf)
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < f.duration && ctx.Err() == nil {
		<-tick.C
		due := int(time.Since(start).Seconds() * float64(f.rate))
		for ; sent < due; sent++ {
			i := sent % len(senders)
			env, err := proto.New(proto.TypeRead, "", receivers[i].name, &proto.Receipt{ID: "t" + strconv.FormatInt(time.Now().UnixNano(), 10)})
			if err != nil {
				return err
			}
			raw, _ := proto.Encode(env)
			senders[i].ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := senders[i].ws.WriteMessage(websocket.TextMessage, raw); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
	}
	elapsed := time.Since(start)
	// Let the last ones arrive, then stop the readers.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		got := len(lat)
		mu.Unlock()
		if got >= sent {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, u := range users[:r] {
		u.ws.Close()
		u.ws = nil
	}
	wg.Wait()
	res.Sent, res.Received, res.Rate = sent, len(lat), float64(sent)/elapsed.Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99, res.Max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	return nil
}

// newRunID is six random letters and digits.
func newRunID() string {
	const abc = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	for i := range b {
		b[i] = abc[rand.IntN(len(abc))]
	}
	return string(b)
}
