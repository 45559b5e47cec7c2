package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one network namespace of a lab: a public host, a home router or
// a home client. Its methods are safe for concurrent use.
type Host struct {
	// Name is the name given to AddPublicHost, or the home name with
	// "-r" (router) or "-c" (client) appended.
	Name string
	// NS is the network namespace name (under /run/netns).
	NS string
	// Addrs are the host's IPv4 addresses, primary first: for a public
	// host one in PublicNet and one in SecondNet; for a NAT router its
	// WAN then LAN address; for a client its LAN (or, behind None, public)
	// address. A bridge router (None) has none.
	Addrs []netip.Addr

	lab *Lab

	mu sync.RWMutex // guards fd; read-held while Do runs
	fd *os.File     // /run/netns/NS, open for the host's life
}

// Addr is the host's primary address (the zero Addr when it has none).
func (h *Host) Addr() netip.Addr {
	if len(h.Addrs) == 0 {
		return netip.Addr{}
	}
	return h.Addrs[0]
}

func (h *Host) String() string { return h.Name + "(" + h.NS + ")" }

func newHost(l *Lab, name, ns string, addrs ...netip.Addr) (*Host, error) {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, fmt.Errorf("natlab: open namespace %s: %w", ns, err)
	}
	h := &Host{Name: name, NS: ns, Addrs: addrs, lab: l, fd: f}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h, nil
}

func (h *Host) closeFD() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd != nil {
		_ = h.fd.Close()
		h.fd = nil
	}
}

// Do runs f on an OS thread switched into the host's network namespace
// (setns(2) with CLONE_NEWNET) and returns f's error. Sockets f creates
// stay in this namespace for their whole life, whichever thread later
// reads or writes them, so f should create sockets and listeners and
// return them; using them afterwards from any goroutine is fine.
//
// Caveat: only f's own goroutine is in the namespace. Goroutines f starts
// run on other threads in the test's namespace, so everything that must be
// inside has to happen synchronously in f. f runs on a fresh goroutine:
// it must not call t.Fatal. A panic in f is re-raised in the caller.
func (h *Host) Do(f func() error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.fd == nil {
		return fmt.Errorf("natlab: %s: %w", h.Name, ErrClosed)
	}
	if err := inNetns(int(h.fd.Fd()), f); err != nil {
		return err
	}
	return nil
}

// inNetns runs f on a locked OS thread that is in the namespace fd.
func inNetns(fd int, f func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("natlab: open own namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("natlab: setns: %w", err)}
			return
		}
		var res result
		func() {
			defer func() {
				if p := recover(); p != nil {
					res = result{panicked: true, value: p}
				}
			}()
			res.err = f()
		}()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime destroys a thread whose goroutine
			// exits while locked, so no other goroutine ever runs in the
			// wrong namespace.
			res.err = errors.Join(res.err, fmt.Errorf("natlab: restore namespace: %w", err))
			ch <- res
			return
		}
		runtime.UnlockOSThread()
		ch <- res
	}()
	r := <-ch
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// ListenPacket is net.ListenPacket inside the namespace. address must use
// an IP literal or an empty host.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := h.Do(func() (err error) {
		pc, err = net.ListenPacket(network, address) //nolint:noctx // no I/O beyond bind
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: listen %s %s: %w", h.Name, network, address, err)
	}
	return pc, nil
}

// ListenUDP is net.ListenUDP inside the namespace.
func (h *Host) ListenUDP(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP(network, laddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: listen %s %v: %w", h.Name, network, laddr, err)
	}
	return c, nil
}

// Listen is net.Listen (TCP, unix) inside the namespace. address must use
// an IP literal or an empty host.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen(network, address) //nolint:noctx // no I/O beyond bind
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: listen %s %s: %w", h.Name, network, address, err)
	}
	return ln, nil
}

// DialContext dials from inside the namespace. address must be an IP
// literal: a host name would be resolved by the test process's resolver,
// outside the lab.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return h.Dialer().DialContext(ctx, network, address)
}

// Dialer returns a Dialer whose connections originate in the namespace.
func (h *Host) Dialer() *Dialer { return &Dialer{host: h} }

// Dialer dials from inside a host's namespace. Set the embedded net.Dialer's
// fields (Timeout, LocalAddr, Control, ...) as usual; FallbackDelay is
// forced negative so no second goroutine (on another thread, outside the
// namespace) ever dials.
type Dialer struct {
	net.Dialer
	host *Host
}

// Dial is DialContext with a background context.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext connects to address (an IP literal) from the namespace.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := checkLiteral(network, address); err != nil {
		return nil, err
	}
	nd := d.Dialer
	nd.FallbackDelay = -1
	var c net.Conn
	err := d.host.Do(func() (err error) {
		c, err = nd.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: %s: dial %s %s: %w", d.host.Name, network, address, err)
	}
	return c, nil
}

// checkLiteral accepts an address whose host is empty or an IP literal
// ("host:port", or a bare IP for ip4:proto networks). Unix sockets pass.
func checkLiteral(network, address string) error {
	if strings.HasPrefix(network, "unix") {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address // a bare address, as ip4:icmp takes
	}
	if host == "" {
		return nil
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i] // zone
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%w: %q", ErrNotLiteral, address)
	}
	return nil
}

// Command returns an unstarted command that runs name inside the namespace
// (through "ip netns exec", which also gives it the namespace's view of
// /sys). The caller owns it: start, wait and kill it yourself. The process
// is killed if the test process dies (Pdeathsig).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Output runs name inside the namespace to completion and returns its
// combined output.
func (h *Host) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("natlab: %s: %s %s: %w: %s", h.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Run starts name inside the namespace in the background and returns the
// started command. Its output goes to the test log, prefixed with the
// host name. It runs in its own process group, which the lab kills (by
// that PID) and reaps at teardown: do not call Wait on it; use Command for
// a process you want to own.
// ip netns exec execs name in place, so the PID is name's own.
func (h *Host) Run(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	l := h.lab
	cmd := h.Command(ctx, name, args...)
	// Its own process group, so teardown can also end the children it
	// forks; WaitDelay bounds Wait if a grandchild holds the output pipe.
	cmd.SysProcAttr.Setpgid = true
	cmd.WaitDelay = 2 * time.Second
	w := &logWriter{lab: l, prefix: h.Name + ": "}
	cmd.Stdout = w
	cmd.Stderr = w
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("natlab: %s: start %s: %w", h.Name, name, err)
	}
	l.procs = append(l.procs, cmd)
	l.log.Info("natlab: started", "host", h.Name, "cmd", name, "pid", cmd.Process.Pid)
	return cmd, nil
}

// logWriter sends lines to the test log while the lab is open.
type logWriter struct {
	lab    *Lab
	prefix string
	mu     sync.Mutex // guards buf
	buf    []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.lab.t.Logf("%s%s", w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a newline-free flood: flush it
		w.lab.t.Logf("%s%s", w.prefix, w.buf)
		w.buf = w.buf[:0]
	}
	return len(p), nil
}
