package main

import (
	"bufio"
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
	"os/exec"
	"path/filepath"
	"regexp"
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

// parley bench signal: a load generator that signs in real identities
// (Ed25519 keys, the hello/auth/welcome handshake) against signaling
// servers, step by step up to each online-user level, then routes messages
// among them at the given rates and churns connections; it reports
// sign-ins per second with each sign-in's latency, the servers' memory per
// online user, routing latency and how many churned users got back in.
//
// By default it starts `parley serve` (this binary) on loopback, pinned to
// one core with taskset when there is one, and connects over TCP, one
// socket per user. --server uses servers already running. --in-process
// starts the node(s) in this process on an in-memory network
// (internal/memnet), so 100,000 users fit whatever the file limit; the
// servers' share of the memory is then told apart from the generator's by
// allocation site in the heap profile, plus every goroutine stack (idle
// generated users have none).

type benchSignalFlags struct {
	servers, metrics    string
	inProcess           bool
	nodes, cpu          int
	levels              []int
	rates               []int
	duration            time.Duration
	routers, workers    int
	churn               int
	churnFor            time.Duration
	timeout             time.Duration
	jsonOut             bool
	dataDir, cpuProfile string
	memProfile          string
}

func runBenchSignal(ctx context.Context, args []string) error {
	return benchSignal(ctx, args, os.Stdout)
}

// benchSignal is parley bench signal, printing to out.
func benchSignal(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("bench signal", "[flags]", `
A load generator for the signaling server: signs in real identities up to
each --users level (timing every sign-in and reading the server's memory at
each level), then at the top level routes read receipts among --routers of
them at each --rate for --duration (send to receive latency), then churns
(--churn users a second close and sign in again, for --churn-for).

By default it starts 'parley serve' (this binary) on 127.0.0.1 with a fresh
--data, pinned to one core (taskset -c --cpu) when taskset is installed, and
connects over TCP, one socket per user (so at most ulimit -n users).
--server uses running servers instead (users spread across them; memory
from their /metrics). --in-process starts --nodes nodes in this process
(three form a cluster of their embedded NATS servers) on an in-memory
network, so 100,000 users fit; their memory is told apart from the
generator's by allocation site (heap profile) plus all goroutine stacks.
Everything stays on loopback or in memory, bounded by --timeout.`)
	var f benchSignalFlags
	var levels, rates string
	fs.StringVar(&f.servers, "server", "", "running signaling servers (URL[,URL...]) instead of starting one")
	fs.StringVar(&f.metrics, "metrics", "", "their /metrics URLs (default: each --server's http(s)://host/metrics)")
	fs.BoolVar(&f.inProcess, "in-process", false, "start the node(s) in this process on an in-memory network")
	fs.IntVar(&f.nodes, "nodes", 1, "nodes to start in this process (with --in-process: 1, or 3 for a cluster)")
	fs.IntVar(&f.cpu, "cpu", 0, "the core the started parley serve is pinned to (-1: not pinned)")
	fs.StringVar(&levels, "users", "100,1000,5000,10000", "online-user levels to sign in up to, in order (comma-separated)")
	fs.StringVar(&rates, "rate", "1000,10000", "routed messages per second in the routing phases (comma-separated; 0: none)")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "length of each routing phase")
	fs.IntVar(&f.routers, "routers", 2000, "users that send and receive in the routing phases (half each)")
	fs.IntVar(&f.churn, "churn", 100, "users per second that disconnect and sign in again in the churn phase (0: none)")
	fs.DurationVar(&f.churnFor, "churn-for", 10*time.Second, "length of the churn phase")
	fs.IntVar(&f.workers, "workers", 32, "concurrent sign-ins")
	fs.DurationVar(&f.timeout, "timeout", 15*time.Minute, "the whole run's limit")
	fs.BoolVar(&f.jsonOut, "json", false, "print one JSON object")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the routing phases to this file (in-process servers)")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a heap profile at the top level to this file (in-process servers)")
	fs.StringVar(&f.dataDir, "data", "", "data directory for started nodes (default: a temporary one, file storage as in production)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if f.levels, err = intList(levels, 2); err != nil {
		return fmt.Errorf("--users: %w", err)
	}
	for i := 1; i < len(f.levels); i++ {
		if f.levels[i] <= f.levels[i-1] {
			return fmt.Errorf("--users %q: levels must increase", levels)
		}
	}
	if f.rates, err = intList(rates, 0); err != nil {
		return fmt.Errorf("--rate: %w", err)
	}
	if f.inProcess && f.nodes != 1 && f.nodes != 3 {
		return errors.New("--nodes must be 1 or 3")
	}
	if f.inProcess && f.servers != "" {
		return errors.New("--in-process and --server exclude each other")
	}
	if f.routers < 2 || f.workers < 1 || f.churn < 0 || f.timeout <= 0 {
		return errors.New("--routers must be >= 2, --workers >= 1, --churn >= 0, --timeout > 0")
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.inProcess {
		runtime.MemProfileRate = 16 << 10 // finer heap samples: the servers' share is told by allocation site
	}
	res, err := benchSignalRun(ctx, &f)
	if err != nil {
		return err
	}
	res.print(out, f.jsonOut)
	return nil
}

// intList parses "1,2,3", each at least least.
func intList(s string, least int) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n < least {
			return nil, fmt.Errorf("%q: want numbers of at least %d", s, least)
		}
		out = append(out, n)
	}
	return out, nil
}

// Results.
type (
	benchSignalResult struct {
		Nodes   int                `json:"nodes"`
		Where   string             `json:"where"`
		Levels  []signalLevel      `json:"levels"`
		Routing []signalRouting    `json:"routing,omitempty"`
		Churn   *signalChurnResult `json:"churn,omitempty"`
	}
	signalLevel struct {
		Users         int     `json:"users"`
		SignInsPerSec float64 `json:"signins_per_s"` // of the step up to this level
		P50           float64 `json:"signin_p50_ms"`
		P99           float64 `json:"signin_p99_ms"`
		ServerMiB     float64 `json:"server_mib"`                         // heap + stacks, above the empty server's
		KiBPerUser    float64 `json:"server_kib_per_user"`                // that over the users
		RSSMiB        float64 `json:"rss_mib"`                            // the server process's resident memory
		CPUPerSignIn  float64 `json:"server_cpu_ms_per_signin,omitempty"` // a started server's CPU time over the step's sign-ins
	}
	signalRouting struct {
		Users     int     `json:"users"`
		Rate      int     `json:"rate"` // asked
		PerSec    float64 `json:"routed_per_s"`
		Sent      int     `json:"sent"`
		Received  int     `json:"received"`
		P50       float64 `json:"p50_ms"`
		P99       float64 `json:"p99_ms"`
		Max       float64 `json:"max_ms"`
		CrossNode float64 `json:"cross_node"`                      // share of pairs on different nodes
		CPUPerMsg float64 `json:"server_cpu_us_per_msg,omitempty"` // a started server's CPU time over the messages
	}
	signalChurnResult struct {
		Users  int     `json:"users"`
		PerSec int     `json:"per_s"`
		Tried  int     `json:"tried"`
		GotIn  int     `json:"got_in"` // within 10 s
		P50ms  float64 `json:"signin_p50_ms"`
		P99ms  float64 `json:"signin_p99_ms"`
	}
)

func (r *benchSignalResult) print(w io.Writer, asJSON bool) {
	if asJSON {
		json.NewEncoder(w).Encode(r)
		return
	}
	fmt.Fprintf(w, "parley bench signal: %d node(s), %s\n\n", r.Nodes, r.Where)
	fmt.Fprintf(w, "%12s %12s %12s %12s %12s %10s %10s %14s\n", "online users", "sign-ins/s", "sign-in p50", "sign-in p99", "server MiB", "KiB/user", "RSS MiB", "CPU/sign-in")
	for _, l := range r.Levels {
		cpu := "-" // in process: the generator's share cannot be told apart
		if l.CPUPerSignIn > 0 {
			cpu = fmt.Sprintf("%.2f ms", l.CPUPerSignIn)
		}
		fmt.Fprintf(w, "%12d %12.0f %9.1f ms %9.1f ms %12.1f %10.1f %10.0f %14s\n", l.Users, l.SignInsPerSec, l.P50, l.P99, l.ServerMiB, l.KiBPerUser, l.RSSMiB, cpu)
	}
	for _, rt := range r.Routing {
		fmt.Fprintf(w, "\nrouting at %d online, %d msgs/s asked (%.0f sent/s): %d sent, %d received; p50 %.2f ms, p99 %.2f ms, max %.1f ms",
			rt.Users, rt.Rate, rt.PerSec, rt.Sent, rt.Received, rt.P50, rt.P99, rt.Max)
		if rt.CPUPerMsg > 0 {
			fmt.Fprintf(w, "; server CPU %.0f µs per message", rt.CPUPerMsg)
		}
		if rt.CrossNode > 0 {
			fmt.Fprintf(w, " (%.0f%% across nodes)", rt.CrossNode*100)
		}
	}
	if c := r.Churn; c != nil {
		fmt.Fprintf(w, "\nchurn at %d online, %d reconnects/s: %d of %d got back in within 10 s; sign-in p50 %.1f ms, p99 %.1f ms",
			c.Users, c.PerSec, c.GotIn, c.Tried, c.P50ms, c.P99ms)
	}
	fmt.Fprintln(w)
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*100) / 100 }

// benchTarget is where the generated users connect.
type benchTarget struct {
	urls  []string
	dials []func(ctx context.Context, network, addr string) (net.Conn, error) // nil: TCP
	nodes []*signal.Server                                                    // in process
	pid   int                                                                 // a started parley serve (its CPU time is read)
	stop  func()
}

// startBenchNodes starts f.nodes nodes in this process on an in-memory
// network.
func startBenchNodes(ctx context.Context, f *benchSignalFlags) (*benchTarget, error) {
	dir, cleanup, err := benchDataDir(f)
	if err != nil {
		return nil, err
	}
	t := &benchTarget{}
	var routes []string
	var ports []int
	if f.nodes > 1 {
		for range f.nodes {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				cleanup()
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
			cleanup()
			return nil, fmt.Errorf("node %d: %w", i+1, r.err)
		}
		l := memnet.Listen(fmt.Sprint("node", i+1), 64<<10)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.srv.Serve(sctx, l) }()
		stops = append(stops, func() { cancel(); <-done })
		t.nodes = append(t.nodes, r.srv)
		t.urls = append(t.urls, fmt.Sprintf("ws://node%d/ws", i+1))
		t.dials = append(t.dials, l.DialContext)
	}
	t.stop = func() {
		var wg sync.WaitGroup
		for _, s := range stops {
			wg.Add(1)
			go func() { defer wg.Done(); s() }()
		}
		wg.Wait()
		cleanup()
	}
	return t, nil
}

// benchDataDir is f.dataDir or a temporary directory removed by cleanup.
func benchDataDir(f *benchSignalFlags) (string, func(), error) {
	if f.dataDir != "" {
		return f.dataDir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "parley-bench-signal-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// runningLine is how parley serve says where it is.
var runningLine = regexp.MustCompile(`Parley is running: open (https?://\S+?)/? in a browser`)

// spawnServe starts `parley serve` (this binary) on loopback with a fresh
// data directory, pinned to f.cpu with taskset when it is installed.
func spawnServe(ctx context.Context, f *benchSignalFlags) (*benchTarget, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	dir, cleanup, err := benchDataDir(f)
	if err != nil {
		return nil, "", err
	}
	name, args := exe, []string{"serve", "--listen", "127.0.0.1:0", "--data", dir, "--no-stun", "--supernode", "off", "--log-level", "error"}
	where := "parley serve, not pinned"
	if ts, err := exec.LookPath("taskset"); err == nil && f.cpu >= 0 {
		name, args = ts, append([]string{"-c", strconv.Itoa(f.cpu), exe}, args...)
		where = fmt.Sprintf("parley serve pinned to CPU %d (taskset)", f.cpu)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cleanup()
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		cleanup()
		return nil, "", err
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		cleanup()
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := runningLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		close(found)
	}()
	select {
	case url, ok := <-found:
		if !ok {
			stop()
			return nil, "", errors.New("parley serve exited before it was running")
		}
		return &benchTarget{urls: []string{sigdial.URL(url)}, dials: []func(context.Context, string, string) (net.Conn, error){nil}, pid: cmd.Process.Pid, stop: stop},
			where + ", TCP loopback", nil
	case <-time.After(30 * time.Second):
		stop()
		return nil, "", errors.New("parley serve did not start within 30 s")
	}
}

// genUser is one generated user.
type genUser struct {
	name string
	key  ed25519.PrivateKey
	node int
	ws   *websocket.Conn
}

// latencies collects the routing phase's send-to-receive times.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// benchRun is one run's shared state.
type benchRun struct {
	f       *benchSignalFlags
	t       *benchTarget
	users   []*genUser
	routing atomic.Pointer[latencies] // the routing phase under way
	readers sync.WaitGroup
}

// benchSignalRun signs in users level by level, measures memory at each,
// routes messages at the top level and churns.
func benchSignalRun(ctx context.Context, f *benchSignalFlags) (*benchSignalResult, error) {
	res := &benchSignalResult{}
	top := f.levels[len(f.levels)-1]
	var t *benchTarget
	var err error
	switch {
	case f.inProcess:
		if t, err = startBenchNodes(ctx, f); err != nil {
			return nil, err
		}
		res.Nodes, res.Where = f.nodes, "in this process, in-memory network"
	case f.servers == "":
		if err := needSockets(top); err != nil {
			return nil, err
		}
		if t, res.Where, err = spawnServe(ctx, f); err != nil {
			return nil, err
		}
		res.Nodes = 1
	default:
		if err := needSockets(top); err != nil {
			return nil, err
		}
		t = &benchTarget{stop: func() {}}
		for _, u := range splitList(f.servers) {
			t.urls = append(t.urls, sigdial.URL(u))
			t.dials = append(t.dials, nil)
		}
		res.Nodes, res.Where = len(t.urls), "running servers over TCP"
	}
	defer t.stop()
	b := &benchRun{f: f, t: t}
	defer func() {
		for _, u := range b.users {
			if u.ws != nil {
				u.ws.Close()
			}
		}
		b.readers.Wait()
	}()

	// Keys first: the sign-ins are timed, not the key generation.
	run := strings.ToLower(newRunID()) // names of this run: a running server keeps earlier runs' names
	for i := range top {
		_, key, _ := ed25519.GenerateKey(nil)
		b.users = append(b.users, &genUser{name: fmt.Sprintf("b%s-%07d", run, i), key: key, node: i % len(t.urls)})
	}
	base, err := b.serverMemory()
	if err != nil {
		return nil, err
	}
	from := 0
	for _, level := range f.levels {
		cpu := procCPU(t.pid)
		lv, err := b.signInStep(ctx, from, level)
		if err != nil {
			return nil, fmt.Errorf("signing in users %d to %d: %w", from+1, level, err)
		}
		m, err := b.serverMemory()
		if err != nil {
			return nil, err
		}
		lv.ServerMiB = math.Round((m.bytes-base.bytes)/(1<<20)*10) / 10
		lv.KiBPerUser = math.Round((m.bytes-base.bytes)/float64(level)/1024*10) / 10
		lv.RSSMiB = math.Round(m.rss / (1 << 20))
		if t.pid != 0 {
			lv.CPUPerSignIn = ms((procCPU(t.pid) - cpu) / time.Duration(level-from))
		}
		res.Levels = append(res.Levels, lv)
		from = level
	}
	if f.memProfile != "" {
		if pf, err := os.Create(f.memProfile); err == nil {
			pprof.Lookup("heap").WriteTo(pf, 0)
			pf.Close()
		}
	}
	if f.inProcess { // idle users had no reader (their stacks would count as the servers'): the routers get one now
		for _, u := range b.users[:min(f.routers-f.routers%2, top)] {
			b.read(u.ws)
		}
	}
	for _, rate := range f.rates {
		if rate == 0 || f.duration <= 0 {
			continue
		}
		rt, err := b.route(ctx, rate)
		if err != nil {
			return nil, fmt.Errorf("routing at %d msgs/s: %w", rate, err)
		}
		res.Routing = append(res.Routing, rt)
	}
	if f.churn > 0 && f.churnFor > 0 {
		res.Churn = b.churnPhase(ctx)
	}
	return res, nil
}

// needSockets checks this process may open a socket per user.
func needSockets(n int) error {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return nil
	}
	want := uint64(n) + 256
	if lim.Cur < want && lim.Max >= want {
		lim.Cur = want
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < want {
		return fmt.Errorf("%d users need %d sockets; this process may open %d (ulimit -n): use --in-process for more", n, want, lim.Cur)
	}
	return nil
}

// signIn signs u in and, unless the servers run in this process, reads
// its frames (answering the server's pings) until the connection closes.
func (b *benchRun) signIn(ctx context.Context, u *genUser) (time.Duration, error) {
	start := time.Now()
	ws, _, err := sigdial.SignIn(ctx, sigdial.Options{URL: b.t.urls[u.node], Dial: b.t.dials[u.node], Agent: "parley-bench",
		Timeout: 10 * time.Second, Auth: func(ch string) *proto.Auth { return proto.SignAuth(u.key, ch, u.name) }})
	if err != nil {
		return 0, err
	}
	took := time.Since(start)
	u.ws = ws
	if !b.f.inProcess {
		b.read(ws)
	}
	return took, nil
}

// signInStep signs in users[from:to] with f.workers at once.
func (b *benchRun) signInStep(ctx context.Context, from, to int) (signalLevel, error) {
	work := make(chan int)
	var failed atomic.Value
	took := make([]time.Duration, to-from)
	var wg sync.WaitGroup
	start := time.Now()
	for range min(b.f.workers, to-from) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				d, err := b.signIn(ctx, b.users[i])
				if err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("sign-in of %s: %w", b.users[i].name, err))
					continue
				}
				took[i-from] = d
			}
		}()
	}
	for i := from; i < to; i++ {
		if failed.Load() != nil || ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		return signalLevel{}, err
	}
	if err := ctx.Err(); err != nil {
		return signalLevel{}, err
	}
	p := durationPercentiles(took, 0.5, 0.99)
	return signalLevel{Users: to, SignInsPerSec: math.Round(float64(to-from) / elapsed.Seconds()), P50: ms(p[0]), P99: ms(p[1])}, nil
}

// durationPercentiles are d's quantiles qs (d is sorted in place).
func durationPercentiles(d []time.Duration, qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	if len(d) == 0 {
		return out
	}
	slices.Sort(d)
	for i, q := range qs {
		out[i] = d[min(len(d)-1, int(q*float64(len(d))))]
	}
	return out
}

// read drains ws until it closes (gorilla answers pings while reading),
// timing the routing phase's receipts.
func (b *benchRun) read(ws *websocket.Conn) {
	b.readers.Add(1)
	go func() {
		defer b.readers.Done()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			lat := b.routing.Load()
			if lat == nil || !strings.Contains(string(data), `"t`) {
				continue
			}
			env, err := proto.Decode(data)
			if err != nil || env.Type != proto.TypeRead {
				continue
			}
			rc, err := proto.DecodeBody[*proto.Receipt](env)
			if err != nil || !strings.HasPrefix(rc.ID, "t") {
				continue
			}
			if sent, err := strconv.ParseInt(rc.ID[1:], 10, 64); err == nil {
				lat.add(time.Duration(time.Now().UnixNano() - sent))
			}
		}
	}()
}

type memFigures struct{ bytes, rss float64 }

// serverMemory is what the servers hold: in this process, the heap
// allocated at server sites plus every goroutine stack; else their
// /metrics' heap and stacks in use.
func (b *benchRun) serverMemory() (memFigures, error) {
	if b.t.nodes != nil {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return memFigures{bytes: serverHeap() + float64(ms.StackInuse), rss: processRSS()}, nil
	}
	urls := splitList(b.f.metrics)
	if b.f.metrics == "" {
		urls = nil
		for _, u := range b.t.urls {
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

// procCPU is process pid's CPU time so far (user and system; Linux), or 0.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) in parentheses:
	// state is field 3, utime 14 and stime 15, in clock ticks (100 Hz).
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// route has half the routers send read receipts (a small routed frame;
// its id carries the send time) to the other half at rate for f.duration
// and measures send-to-receive latency.
func (b *benchRun) route(ctx context.Context, rate int) (signalRouting, error) {
	f, users := b.f, b.users
	r := min(f.routers, len(users))
	r -= r % 2
	senders, receivers := users[:r/2], users[r/2:r]
	out := signalRouting{Users: len(users), Rate: rate}
	cross := 0
	for i := range senders {
		if senders[i].node != receivers[i].node {
			cross++
		}
	}
	out.CrossNode = float64(cross) / float64(len(senders))
	lat := &latencies{}
	b.routing.Store(lat)
	defer b.routing.Store(nil)
	if f.cpuProfile != "" && b.t.nodes != nil {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return out, err
		}
		if pprof.StartCPUProfile(pf) == nil {
			defer func() { pprof.StopCPUProfile(); pf.Close() }()
		}
	}
	cpu := procCPU(b.t.pid)
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < f.duration && ctx.Err() == nil {
		<-tick.C
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; sent < due; sent++ {
			i := sent % len(senders)
			env, err := proto.New(proto.TypeRead, "", receivers[i].name, &proto.Receipt{ID: "t" + strconv.FormatInt(time.Now().UnixNano(), 10)})
			if err != nil {
				return out, err
			}
			raw, _ := proto.Encode(env)
			ws := senders[i].ws
			ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteMessage(websocket.TextMessage, raw); err != nil {
				return out, fmt.Errorf("send: %w", err)
			}
		}
	}
	elapsed := time.Since(start)
	// Let the last ones arrive.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && lat.n() < sent; {
		time.Sleep(20 * time.Millisecond)
	}
	lat.mu.Lock()
	d := append([]time.Duration(nil), lat.d...)
	lat.mu.Unlock()
	if b.t.pid != 0 && sent > 0 {
		out.CPUPerMsg = math.Round(float64(procCPU(b.t.pid)-cpu)/float64(sent)/float64(time.Microsecond)*10) / 10
	}
	out.Sent, out.Received, out.PerSec = sent, len(d), math.Round(float64(sent)/elapsed.Seconds())
	if len(d) > 0 {
		p := durationPercentiles(d, 0.5, 0.99, 1)
		out.P50, out.P99, out.Max = ms(p[0]), ms(p[1]), ms(p[2])
	}
	return out, nil
}

// churnPhase has f.churn users a second (beyond the routers, in turn)
// close their connection and sign in again, for f.churnFor; a user still
// signing in is not churned again.
func (b *benchRun) churnPhase(ctx context.Context) *signalChurnResult {
	f := b.f
	pool := b.users[min(f.routers-f.routers%2, len(b.users)-1):]
	out := &signalChurnResult{Users: len(b.users), PerSec: f.churn}
	var mu sync.Mutex
	var took []time.Duration
	busy := make([]atomic.Bool, len(pool))
	var wg sync.WaitGroup
	start := time.Now()
	asked := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < f.churnFor && ctx.Err() == nil {
		<-tick.C
		due := int(time.Since(start).Seconds() * float64(f.churn))
		for ; asked < due; asked++ {
			i := asked % len(pool)
			if !busy[i].CompareAndSwap(false, true) {
				continue
			}
			out.Tried++
			u := pool[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer busy[i].Store(false)
				if u.ws != nil {
					u.ws.Close()
					u.ws = nil
				}
				d, err := b.signIn(ctx, u)
				if err != nil || d > 10*time.Second {
					return
				}
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	out.GotIn = len(took)
	p := durationPercentiles(took, 0.5, 0.99)
	out.P50ms, out.P99ms = ms(p[0]), ms(p[1])
	return out
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
