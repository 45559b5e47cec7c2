package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Config configures a Lab. The zero value is ready to use.
type Config struct {
	// Logger receives lifecycle (INFO) and command (DEBUG) logs.
	// Nil discards them.
	Logger *slog.Logger
	// MappingTimeout is how long a cone NAT (FullCone, Restricted) keeps an
	// inbound mapping after the client's last outbound packet. Zero means
	// 120 s, the minimum RFC 4787 section 4.3 REQ-5 allows.
	MappingTimeout time.Duration
}

// Lab is one private internet with its hosts and homes. Create it with New;
// it is torn down by t.Cleanup (or an earlier Close). Add* methods must be
// called from the test's goroutine (they call t.Fatal on failure); Host
// methods may be called from any goroutine.
type Lab struct {
	t        testing.TB
	cfg      Config
	log      *slog.Logger
	prefix   string // namespace name prefix, "pl<pid>l<seq>"
	inet     string // the internet namespace
	inetHost *Host

	mu       sync.Mutex // guards the fields below
	closed   bool
	names    map[string]bool // host and home names in use
	netns    []string        // namespaces created, in creation order
	hosts    []*Host
	nextPub  int // next host number on the internet (203.0.113.n)
	nextLAN  int // next home number (10.0.n.0/24)
	nextPort int // next bridge port number in the internet namespace
	procs    []*exec.Cmd
	impair   map[*Home]*impairer
	cuts     int // Cut tables made
}

// Internet address plan. Both ranges are RFC 5737 documentation ranges and
// exist only inside the lab's namespaces.
var (
	// PublicNet holds every internet address: public hosts, home routers'
	// WAN addresses and the clients of None homes.
	PublicNet = netip.MustParsePrefix("203.0.113.0/24")
	// SecondNet holds each public host's second address (RFC 5780
	// CHANGE-REQUEST "change IP" needs two).
	SecondNet = netip.MustParsePrefix("198.51.100.0/24")
)

const (
	nsPrefix = "pl"
	maxName  = 10
	bridge   = "br0"
)

var (
	labSeq     atomic.Uint32
	nsNameRE   = regexp.MustCompile(`^pl([0-9]+)l([0-9]+)-`)
	hostNameRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)
)

// Require skips t, loudly, when this machine cannot host a lab: not root,
// or ip, nft or iptables missing. CI runs as root with them installed, so a
// skip there is a configuration error worth reading.
func Require(t testing.TB) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skipf("natlab: SKIPPING kernel NAT lab test — %v (CI must run these as root with iproute2, nftables and iptables installed)", err)
	}
}

// Supported reports why this machine cannot host a lab, or nil.
func Supported() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root (euid %d)", ErrUnsupported, os.Geteuid())
	}
	for _, tool := range []string{"ip", "nft", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found in PATH", ErrUnsupported, tool)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: no network namespaces: %v", ErrUnsupported, err)
	}
	return nil
}

// New builds an empty lab: the internet namespace with its bridge. It calls
// Require first (so it skips where a lab cannot run), sweeps namespaces
// left by dead processes, and registers teardown with t.Cleanup.
func New(t testing.TB, cfg Config) *Lab {
	t.Helper()
	Require(t)
	if cfg.MappingTimeout == 0 {
		cfg.MappingTimeout = 120 * time.Second
	}
	if cfg.MappingTimeout < time.Second {
		t.Fatalf("natlab: MappingTimeout %v below 1s", cfg.MappingTimeout)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l := &Lab{
		t:       t,
		cfg:     cfg,
		log:     log,
		prefix:  fmt.Sprintf("%s%dl%d", nsPrefix, os.Getpid(), labSeq.Add(1)),
		names:   map[string]bool{},
		nextPub: 2,
		nextLAN: 1,
		impair:  map[*Home]*impairer{},
	}
	l.inet = l.prefix + "-inet"
	start := time.Now()
	if n, err := Sweep(); err != nil {
		l.log.Warn("natlab: sweep leftovers", "err", err)
	} else if n > 0 {
		l.log.Info("natlab: swept leftover namespaces", "count", n)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("natlab: teardown: %v", err)
		}
	})
	l.names["inet"] = true // its namespace is prefix-inet
	if err := l.addNetns(l.inet); err != nil {
		t.Fatalf("natlab: create internet: %v", err)
	}
	ih, err := newHost(l, "inet", l.inet)
	if err != nil {
		t.Fatalf("natlab: %v", err)
	}
	l.inetHost = ih
	if err := ih.Do(hostSysctls(false)); err != nil {
		t.Fatalf("natlab: internet sysctls: %v", err)
	}
	if err := l.ipBatch(l.inet, "link set lo up", "link add "+bridge+" type bridge", "link set "+bridge+" up"); err != nil {
		t.Fatalf("natlab: create internet bridge: %v", err)
	}
	l.log.Info("natlab: lab up", "prefix", l.prefix, "took", time.Since(start))
	return l
}

// Internet is the namespace holding the internet bridge "br0" (ports p1,
// p2, ...). It has no addresses; use it to capture or inspect traffic.
func (l *Lab) Internet() *Host { return l.inetHost }

// Prefix is the namespace name prefix of this lab ("pl<pid>l<seq>"); every
// namespace it creates starts with Prefix()+"-".
func (l *Lab) Prefix() string { return l.prefix }

// Namespaces lists the namespaces this lab created and has not deleted.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.netns...)
}

// Close tears the lab down: stops impairments, kills processes started with
// Host.Start (by PID) and deletes every namespace. Sockets a test opened in
// a namespace keep that namespace alive until they are closed. Close is
// idempotent and runs from t.Cleanup automatically.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	imps := l.impair
	l.impair = nil
	procs := l.procs
	l.procs = nil
	hosts := l.hosts
	l.hosts = nil
	netns := l.netns
	l.netns = nil
	l.mu.Unlock()

	start := time.Now()
	var errs []error
	for _, im := range imps {
		im.close()
	}
	for _, cmd := range procs {
		if cmd.Process != nil {
			// The group whose leader is the process we started.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Process.Kill()
			_ = cmd.Wait() // reaps it and drains its output
		}
	}
	for _, h := range hosts {
		h.closeFD()
	}
	if len(netns) > 0 {
		lines := make([]string, 0, len(netns))
		for i := len(netns) - 1; i >= 0; i-- {
			lines = append(lines, "netns del "+netns[i])
		}
		if err := l.ipBatch("", lines...); err != nil {
			errs = append(errs, err)
		}
		for _, ns := range netns {
			if err := removeEtc(ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	l.log.Info("natlab: lab down", "prefix", l.prefix, "namespaces", len(netns), "took", time.Since(start))
	return errors.Join(errs...)
}

// Sweep deletes namespaces that earlier labs left behind: names with the
// lab pattern whose creating process is gone. It returns how many it
// deleted. New calls it; it is exported for tools and tests.
func Sweep() (int, error) {
	ents, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("natlab: sweep: %w", err)
	}
	var dead []string
	for _, e := range ents {
		pid, ok := ownerPID(e.Name())
		if !ok || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			continue // owner alive (or pid reused): leave it
		}
		dead = append(dead, "netns del "+e.Name())
		removeEtc(e.Name())
	}
	if len(dead) == 0 {
		return 0, nil
	}
	if err := run(context.Background(), strings.Join(dead, "\n"), "ip", "-force", "-batch", "-"); err != nil {
		return 0, fmt.Errorf("natlab: sweep: %w", err)
	}
	return len(dead), nil
}

// ownerPID parses the creating pid out of a lab namespace name.
func ownerPID(name string) (int, bool) {
	m := nsNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// claimName checks a user-given name and reserves it.
func (l *Lab) claimName(name string) error {
	if len(name) == 0 || len(name) > maxName || !hostNameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want [a-z][a-z0-9]*, at most %d characters)", ErrBadName, name, maxName)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.names[name] {
		return fmt.Errorf("%w: %q already used in this lab", ErrBadName, name)
	}
	l.names[name] = true
	return nil
}

// addNetns creates a namespace, records it for teardown, and makes it
// IPv4-only (no link-local IPv6 chatter, no v6 candidates).
func (l *Lab) addNetns(name string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.Unlock()
	if err := l.ip("", "netns", "add", name); err != nil {
		return err
	}
	l.mu.Lock()
	l.netns = append(l.netns, name)
	l.mu.Unlock()
	return nil
}

// ip runs one ip(8) command, in namespace ns when ns is not empty.
func (l *Lab) ip(ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	l.log.Debug("natlab: ip", "args", args)
	return run(context.Background(), "", "ip", args...)
}

// ipBatch runs several ip(8) commands in one process, in namespace ns when
// ns is not empty. -force keeps going past a failed line but still fails.
func (l *Lab) ipBatch(ns string, lines ...string) error {
	args := []string{"-force", "-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	l.log.Debug("natlab: ip batch", "ns", ns, "lines", lines)
	return run(context.Background(), strings.Join(lines, "\n")+"\n", "ip", args...)
}

// run runs a helper tool to completion, returning its output in the error.
func run(ctx context.Context, stdin, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
