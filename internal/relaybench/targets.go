package relaybench

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/pion/stun/v4"
)

// lab is what every run shares: a signaling server (it promotes the
// supernodes under test, by the same proof as anywhere) and a user whose
// supernode lists carry relay tokens and TURN credentials.
type lab struct {
	cfg    Config
	url    string
	stop   context.CancelFunc
	ws     *websocket.Conn
	lists  chan *proto.SupernodeList
	tmp    string
	seq    int
	secret string // coturn's static-auth-secret
}

func newLab(ctx context.Context, cfg Config) (*lab, error) {
	_, tokenKey, _ := ed25519.GenerateKey(nil)
	srv, err := signal.New(signal.Config{RateLimit: 10000, RateBurst: 10000, Supernodes: signal.SupernodeConfig{
		TokenKey:   tokenKey,
		AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeBytes: 256 << 10, MinMbps: 1, Heartbeat: time.Second,
		TokenTTL: time.Hour, CredentialTTL: 12 * time.Hour,
	}})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	go srv.Serve(sctx, ln)
	l := &lab{cfg: cfg, url: "ws://" + ln.Addr().String() + "/ws", stop: stop, lists: make(chan *proto.SupernodeList, 16), secret: "relaybench-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if l.tmp, err = os.MkdirTemp("", "parley-bench-relay-"); err != nil {
		stop()
		return nil, err
	}
	_, key, _ := ed25519.GenerateKey(nil)
	ws, _, err := sigdial.SignIn(ctx, sigdial.Options{URL: l.url, Agent: "parley-bench/1", Auth: func(ch string) *proto.Auth {
		return proto.SignAuth(key, ch, "benchuser")
	}})
	if err != nil {
		l.close()
		return nil, fmt.Errorf("relaybench: sign in: %w", err)
	}
	l.ws = ws
	go func() {
		for {
			env, err := sigdial.Read(ws)
			if err != nil {
				return
			}
			if env.Type == proto.TypeSupernodes {
				if sl, err := proto.DecodeBody[*proto.SupernodeList](env); err == nil {
					select {
					case l.lists <- sl:
					default:
					}
				}
			}
		}
	}()
	return l, nil
}

func (l *lab) close() {
	if l.ws != nil {
		l.ws.Close()
	}
	l.stop()
	os.RemoveAll(l.tmp)
}

// supernode waits until the signaling server lists supernode id for our
// user and returns its entry.
func (l *lab) supernode(ctx context.Context, id string, exited <-chan struct{}) (proto.SupernodeInfo, error) {
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case sl := <-l.lists:
			for _, sn := range sl.Supernodes {
				if sn.ID == id {
					return sn, nil
				}
			}
		case <-tick.C:
			sigdial.Write(l.ws, proto.TypeRelayRequest, "rr", &proto.RelayRequest{})
		case <-exited:
			return proto.SupernodeInfo{}, fmt.Errorf("relaybench: supernode %s exited before promotion", id)
		case <-deadline:
			return proto.SupernodeInfo{}, fmt.Errorf("relaybench: supernode %s not promoted within 30 s", id)
		case <-ctx.Done():
			return proto.SupernodeInfo{}, ctx.Err()
		}
	}
}

// pinned is cmd run on the relay CPU (taskset) with GOMAXPROCS=RelayProcs.
func (l *lab) pinned(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", strconv.Itoa(l.cfg.RelayCPU), name}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(l.cfg.RelayProcs))
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// child is a relay process.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *tail
}

// stop interrupts the process and waits for it (killing it after 10 s).
func (c *child) stop() {
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// failed stops the process and wraps err with its stderr.
func (c *child) failed(err error) error {
	c.stop()
	return fmt.Errorf("%w (stderr: %s)", err, c.stderr)
}

// start runs cmd, scanning its stdout with scan (until it returns true;
// nil: not waiting) and keeping the tail of its stderr for errors.
func start(cmd *exec.Cmd, scan func(line string) bool) (*child, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &tail{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("relaybench: start %s: %w", cmd.Path, err)
	}
	exited := make(chan struct{})
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		done := scan == nil
		if done {
			close(found)
		}
		for sc.Scan() {
			if !done && scan(sc.Text()) {
				done = true
				close(found)
			}
		}
		if !done {
			close(found)
		}
		io.Copy(io.Discard, out)
	}()
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-found:
	case <-exited:
	}
	return &child{cmd: cmd, exited: exited, stderr: stderr}, nil
}

// tail keeps the last few KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.TrimSpace(string(t.b)) }

// startParley runs `parley supernode` pinned, with limits that do not bind
// in a benchmark, and waits for its promotion.
func (l *lab) startParley(ctx context.Context, flows int) (*target, error) {
	t, _, err := l.startSupernode(ctx, "benchsn", "--max-sessions", strconv.Itoa(2*flows+64), "--max-allocs-per-user", strconv.Itoa(flows+64),
		"--max-relay-mbps", "100000", "--max-session-kbps", "1000000")
	return t, err
}

// startSupernode runs `parley supernode` pinned on loopback with limits
// (flags), waits for its promotion and returns it and its status page's
// address.
func (l *lab) startSupernode(ctx context.Context, prefix string, limits ...string) (*target, string, error) {
	l.seq++
	name := fmt.Sprintf("%s%d", prefix, l.seq)
	lo := "127.0.0.1:0"
	args := append([]string{"supernode", "--server", l.url, "--name", name, "--profile", filepath.Join(l.tmp, name),
		"--listen-quic", lo, "--listen-turn-udp", lo, "--listen-turn-tcp", lo, "--listen-turn-tls", lo,
		"--allow-peer", "127.0.0.0/8", "--status-addr", lo, "--discover-nat=false", "--log-level", "warn"}, limits...)
	var status string
	c, err := start(l.pinned(ctx, l.cfg.Exe, args...), func(line string) bool {
		if i := strings.Index(line, "status page http://"); i >= 0 {
			status = strings.TrimSuffix(strings.TrimSpace(line[i+len("status page "):]), "/")
			return true
		}
		return false
	})
	if err != nil {
		return nil, "", err
	}
	sn, err := l.supernode(ctx, name, c.exited)
	if err != nil {
		return nil, "", c.failed(err)
	}
	t := &target{name: "parley", pid: c.cmd.Process.Pid, fp: sn.Fingerprint, token: sn.Token, user: sn.TURNUsername, pass: sn.TURNPassword, stop: c.stop}
	for _, a := range []struct {
		s string
		p *netip.AddrPort
	}{{sn.TURNUDP, &t.udp}, {sn.TURNTCP, &t.tcp}, {sn.TURNTLS, &t.tls}, {sn.QUIC, &t.quic}} {
		*a.p, _ = netip.ParseAddrPort(a.s)
	}
	return t, status, nil
}

// startCoturn runs Debian's coturn in the foreground, pinned, on loopback,
// with TURN REST credentials (use-auth-secret), as an operator would.
func (l *lab) startCoturn(ctx context.Context) (*target, error) {
	if _, err := exec.LookPath("turnserver"); err != nil {
		return nil, errors.New("relaybench: coturn is not installed (Debian: apt-get install coturn; " +
			"keep its service from starting with a policy-rc.d that exits 101)")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", strconv.Itoa(port),
		"--use-auth-secret", "--static-auth-secret", l.secret, "--realm", "parley", "--no-tls", "--no-dtls", "--no-cli",
		"--allow-loopback-peers", "--no-software-attribute", "--log-file", "/dev/null", "--no-stdout-log", "--simple-log",
		"--min-port", "20000", "--max-port", "60000"}
	if l.cfg.CoturnThreads > 0 {
		args = append(args, "--relay-threads", strconv.Itoa(l.cfg.CoturnThreads))
	}
	c, err := start(l.pinned(ctx, "turnserver", args...), nil)
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	if err := waitSTUN(ctx, addr, c.exited); err != nil {
		return nil, c.failed(err)
	}
	user, pass := proto.TURNCredentials([]byte(l.secret), "benchuser", time.Now().Add(12*time.Hour))
	return &target{name: "coturn", pid: c.cmd.Process.Pid, udp: addr, tcp: addr, user: user, pass: pass, stop: c.stop}, nil
}

// startForwarder runs the batched forwarder (`parley bench forwarder`)
// pinned.
func (l *lab) startForwarder(ctx context.Context, flows int) (*target, error) {
	var info ForwarderInfo
	c, err := start(l.pinned(ctx, l.cfg.Exe, "bench", "forwarder", "--listen", "127.0.0.1:0", "--flows", strconv.Itoa(flows)),
		func(line string) bool { return json.Unmarshal([]byte(line), &info) == nil && info.Listen != "" })
	if err != nil {
		return nil, err
	}
	t := &target{name: "forwarder", pid: c.cmd.Process.Pid, forwarder: true, stop: c.stop}
	var perr error
	if t.udp, perr = netip.ParseAddrPort(info.Listen); perr != nil || len(info.Relays) != flows {
		return nil, c.failed(errors.New("relaybench: the forwarder did not start"))
	}
	for _, r := range info.Relays {
		ap, _ := netip.ParseAddrPort(r)
		t.relays = append(t.relays, ap)
	}
	return t, nil
}

// ForwarderInfo is the line `parley bench forwarder` prints when ready.
type ForwarderInfo struct {
	Listen string   `json:"listen"`
	Relays []string `json:"relays"`
}

func freePort() (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("relaybench: no free port")
}

// waitSTUN waits until addr answers a STUN Binding request.
func waitSTUN(ctx context.Context, addr netip.AddrPort, exited <-chan struct{}) error {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		select {
		case <-exited:
			return errors.New("relaybench: the relay exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		pc.WriteTo(req.Raw, net.UDPAddrFromAddrPort(addr))
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := pc.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return nil
		}
	}
	return fmt.Errorf("relaybench: no STUN answer from %s", addr)
}
