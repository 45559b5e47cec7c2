package natlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// labNamespaces lists /run/netns entries starting with prefix.
func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestCleanupLeavesNothing builds a lab with every part (hosts, homes, an
// impairment, a process) in a subtest and checks that its cleanup removed
// every namespace and killed the process.
func TestCleanupLeavesNothing(t *testing.T) {
	Require(t)
	var prefix string
	var pid int
	goroutines := runtime.NumGoroutine()
	t.Run("lab", func(t *testing.T) {
		lab := New(t, Config{})
		prefix = lab.Prefix()
		lab.AddPublicHost("s")
		for _, k := range Kinds {
			lab.AddHome(fmt.Sprintf("h%d", int(k)), k)
		}
		home := lab.AddHome("imp", Symmetric)
		lab.Impair(home, Impairment{Delay: time.Millisecond})
		cmd, err := home.Client.Run(context.Background(), "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		pid = cmd.Process.Pid
		want := 1 + 1 + 2*(len(Kinds)+1)
		if got := labNamespaces(t, prefix); len(got) != want || len(lab.Namespaces()) != want {
			t.Fatalf("namespaces %v (lab says %d), want %d", got, len(lab.Namespaces()), want)
		}
	})
	if left := labNamespaces(t, prefix); len(left) != 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("process %d started with Host.Run still exists", pid)
	}
	// The impairer's and the process's goroutines are gone too.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after teardown, %d before", n, goroutines)
	}
}

// TestCloseIdempotent checks Close twice and use after Close.
func TestCloseIdempotent(t *testing.T) {
	lab := New(t, Config{})
	h := lab.AddPublicHost("s")
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := h.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v, want ErrClosed", err)
	}
	if _, err := h.Run(context.Background(), "true"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
	if _, err := lab.addPublicHost("t"); !errors.Is(err, ErrClosed) {
		t.Fatalf("add after Close: %v, want ErrClosed", err)
	}
	if left := labNamespaces(t, lab.Prefix()); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}

// TestSweep plants namespaces named like a dead process's lab, our own
// lab and something else, and checks that Sweep deletes only the first.
func TestSweep(t *testing.T) {
	Require(t)
	// A pid that is certainly dead: a child we started and reaped.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	dead := c.Process.Pid
	names := map[string]bool{ // name -> should survive
		fmt.Sprintf("pl%dl1-x", dead):         false,
		fmt.Sprintf("pl%dl9-y-r", dead):       false,
		fmt.Sprintf("pl%dl77-z", os.Getpid()): true,
		fmt.Sprintf("plx%d-other", dead):      true,
	}
	for n := range names {
		if err := run(context.Background(), "", "ip", "netns", "add", n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = run(context.Background(), "", "ip", "netns", "del", n) })
	}
	deleted, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if deleted < 2 {
		t.Errorf("Sweep deleted %d, want at least 2", deleted)
	}
	for n, survive := range names {
		_, err := os.Stat("/run/netns/" + n)
		if exists := err == nil; exists != survive {
			t.Errorf("%s exists=%v, want %v", n, exists, survive)
		}
	}
}

func TestOwnerPID(t *testing.T) {
	cases := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"pl123l1-inet", 123, true},
		{"pl4194304l12-alice-r", 4194304, true},
		{"pl123-inet", 0, false},
		{"plal1-x", 0, false},
		{"pl0l1-x", 0, false},
		{"xpl123l1-x", 0, false},
		{"pl123l1", 0, false},
		{"pl99999999999999999999l1-x", 0, false},
	}
	for _, c := range cases {
		pid, ok := ownerPID(c.name)
		if pid != c.pid || ok != c.ok {
			t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", c.name, pid, ok, c.pid, c.ok)
		}
	}
}

func TestNames(t *testing.T) {
	lab := New(t, Config{})
	lab.AddPublicHost("dup")
	cases := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"srv2", true},
		{"", false},
		{"Upper", false},
		{"1abc", false},
		{"has-dash", false},
		{"has space", false},
		{"toolongname1", false},
		{"dup", false},
		{"inet", false},
	}
	for _, c := range cases {
		_, err := lab.addPublicHost(c.name)
		if (err == nil) != c.ok {
			t.Errorf("addPublicHost(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("addPublicHost(%q) error %v is not ErrBadName", c.name, err)
		}
	}
	if _, err := lab.addHome("badkind", NATKind(42)); !errors.Is(err, ErrBadKind) {
		t.Errorf("addHome with kind 42: %v, want ErrBadKind", err)
	}
}

// TestDo checks that Do switches namespace for f only, restores the
// caller's, and re-raises a panic.
func TestDo(t *testing.T) {
	lab := New(t, Config{})
	h := lab.AddPublicHost("s")
	own := func() string {
		l, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	outside := own()
	var inside string
	err := h.Do(func() error {
		l, err := os.Readlink("/proc/thread-self/ns/net")
		inside = l
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside == "" || inside == outside {
		t.Fatalf("inside %q, outside %q: Do did not switch", inside, outside)
	}
	// Every thread of the process is back in its namespace: probe many
	// goroutines that may land on the thread Do used.
	for i := 0; i < 50; i++ {
		_ = h.Do(func() error { return nil })
		if got := own(); got != outside {
			t.Fatalf("test goroutine's thread in %s after Do, want %s", got, outside)
		}
	}
	sentinel := errors.New("boom")
	if err := h.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Fatalf("Do error %v, want %v", err, sentinel)
	}
	func() {
		defer func() {
			if p := recover(); p != "panic in f" {
				t.Fatalf("recovered %v", p)
			}
		}()
		_ = h.Do(func() error { panic("panic in f") })
	}()
	// Interfaces inside are the namespace's: lo and eth0 only.
	var ifs []net.Interface
	if err := h.Do(func() (err error) { ifs, err = net.Interfaces(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 2 || ifs[1].Name != "eth0" {
		t.Fatalf("interfaces inside: %v", ifs)
	}
}

// TestHostCommands checks Command, Output and Run run inside the namespace.
func TestHostCommands(t *testing.T) {
	lab := New(t, Config{})
	home := lab.AddHome("h", Restricted)
	out, err := home.Client.Output(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), home.Client.Addr().String()+"/24") {
		t.Fatalf("ip addr inside client: %s", out)
	}
	out, err = home.Router.Output(context.Background(), "nft", "list", "table", "ip", "natlab")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"map cone", "set peers", "masquerade", "@peers"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("router ruleset lacks %q:\n%s", want, out)
		}
	}
	if _, err := home.Client.Output(context.Background(), "false"); err == nil {
		t.Fatal("Output of false: nil error")
	}
	cmd, err := home.Client.Run(context.Background(), "sh", "-c", "echo started; sleep 30")
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Process.Pid <= 0 {
		t.Fatal("no pid")
	}
	// ip netns exec execs in place: the PID's netns is the client's.
	deadline := time.Now().Add(2 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		got, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		var in string
		_ = home.Client.Do(func() error { in, _ = os.Readlink("/proc/thread-self/ns/net"); return nil })
		if got == in && got != "" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d netns %q is not the client's", cmd.Process.Pid, got)
}
