package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var soakMessages = flag.Int("soak.messages", 1000, "messages TestSoakMessages sends")

// TestSoakMessages: alice sends bob numbered messages with the real
// binaries (`parley serve` with a durable store and a small mailbox,
// `parley chat --json` on both ends) through every fault a message must
// survive: the server stopped (SIGTERM) and killed (SIGKILL) and
// restarted, alice killed with messages in her outbox that never left,
// bob offline while more arrive than his mailbox holds (alice holds the
// rest), and bob killed while his backlog is delivered. Across all of
// bob's runs, every message is printed exactly once and in alice's order.
func TestSoakMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; minutes with -soak.messages 1000")
	}
	n := *soakMessages
	if n < 100 {
		t.Fatalf("-soak.messages %d: at least 100 to cover every fault", n)
	}
	dir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	serve := func() *proc {
		p := start(t, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "server"),
			"--supernode", "off", "--no-stun", "--mailbox-messages", "40")
		p.waitLine("server up", func(s string) bool { return strings.Contains(s, "Parley is running") })
		return p
	}
	chat := func(name string) *proc {
		return start(t, "chat", "--json", "--ice-loopback", "--log-level", "info", "--server", url, "--name", name, "--profile", filepath.Join(dir, name))
	}
	var bobRuns []*proc
	startBob := func() *proc {
		b := chat("bob")
		bobRuns = append(bobRuns, b)
		return b
	}
	srv := serve()
	bob := startBob()
	alice := chat("alice")
	alice.waitEvent(map[string]any{"event": "presence", "name": "bob", "online": true})

	next := 1
	send := func(k int) {
		for end := next + k; next < end && next <= n; next++ {
			alice.send(fmt.Sprintf(`{"cmd":"send","to":"bob","text":"soak %06d"}`, next))
		}
	}
	sentAll := func(p *proc, upTo int) { // alice printed "sent" for everything up to upTo
		deadline := time.Now().Add(20 * time.Second)
		for countSent(p) < upTo {
			if time.Now().After(deadline) {
				t.Fatalf("alice printed %d sent events, want %d", countSent(p), upTo)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	seg := n / 8         // each of the first four phases
	full := max(n/4, 45) // phase 5: more than the mailbox (40) holds
	start := time.Now()

	send(seg) // 1: both online, over the data channel or sealed through the server
	waitShown(t, &bobRuns, next-1, &alice)

	srv.stopSignal("SIGTERM") // 2: the server stops; alice keeps writing
	send(seg)
	srv = serve()
	waitShown(t, &bobRuns, next-1, &alice)

	srv.kill() // 3: the server dies
	send(seg / 2)
	srv = serve()
	send(seg - seg/2)
	waitShown(t, &bobRuns, next-1, &alice)

	srv.kill() // 4: alice dies with messages that never left her outbox
	aliceSent := countSent(alice)
	send(seg)
	sentAll(alice, aliceSent+seg)
	alice.kill()
	srv = serve()
	alice = chat("alice")
	waitShown(t, &bobRuns, next-1, &alice)

	bob.stopSignal("SIGTERM") // 5: bob away; more than his mailbox holds arrive
	alice.waitEvent(map[string]any{"event": "presence", "name": "bob", "online": false})
	send(full)
	alice.waitLine("mailbox full", func(s string) bool { return strings.Contains(s, `"code":"over_budget"`) })
	bob = startBob()
	waitShown(t, &bobRuns, next-1, &alice)

	bob.stopSignal("SIGTERM") // 6: bob killed while his backlog comes in
	alice.waitEvent(map[string]any{"event": "presence", "name": "bob", "online": false})
	send(n - next + 1)
	bob = startBob()
	bob.waitLine("backlog started", func(s string) bool { return strings.Contains(s, `"event":"message"`) })
	// Killed at some moment of the backlog's delivery (not in step with
	// its output: a kill in the microseconds between printing a line and
	// noting it shown prints that one message again, by its id).
	time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
	bob.kill()
	bob = startBob()
	waitShown(t, &bobRuns, n, &alice)
	took := time.Since(start)

	// Exactly once and in order across all of bob's runs.
	got := shownNumbers(bobRuns)
	seen := map[int]int{}
	for i, x := range got {
		seen[x]++
		if i > 0 && x <= got[i-1] {
			t.Errorf("out of order: %d after %d", x, got[i-1])
		}
	}
	lost, dup := 0, 0
	for i := 1; i <= n; i++ {
		switch seen[i] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	t.Logf("%d messages through server SIGTERM and SIGKILL, sender SIGKILL with an unsent outbox, a full mailbox, and a receiver SIGKILL mid-backlog: %d lost, %d duplicated, in %s (%d receiver runs)",
		n, lost, dup, took.Round(time.Second), len(bobRuns))
	if lost != 0 || dup != 0 {
		t.Fatalf("%d lost, %d duplicated", lost, dup)
	}
}

var soakText = regexp.MustCompile(`^soak (\d{6})$`)

// shownNumbers are the soak messages bob's runs printed, in print order.
func shownNumbers(runs []*proc) []int {
	var out []int
	for _, p := range runs {
		p.mu.Lock()
		lines := append([]string(nil), p.lines...)
		p.mu.Unlock()
		for _, l := range lines {
			var ev struct{ Event, From, Text string }
			if json.Unmarshal([]byte(l), &ev) != nil || ev.Event != "message" || ev.From != "alice" {
				continue
			}
			if m := soakText.FindStringSubmatch(ev.Text); m != nil {
				x, _ := strconv.Atoi(m[1])
				out = append(out, x)
			}
		}
	}
	return out
}

// waitShown waits until bob's runs together printed every message up to upTo.
func waitShown(t *testing.T, runs *[]*proc, upTo int, sender **proc) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		seen := map[int]bool{}
		for _, x := range shownNumbers(*runs) {
			seen[x] = true
		}
		var missing []int
		for i := 1; i <= upTo; i++ {
			if !seen[i] {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var last []string
			for _, p := range *runs {
				p.mu.Lock()
				last = append(last, p.lines[max(0, len(p.lines)-5):]...)
				p.mu.Unlock()
			}
			(*sender).mu.Lock()
			alast := append([]string(nil), (*sender).lines[max(0, len((*sender).lines)-15):]...)
			(*sender).mu.Unlock()
			t.Fatalf("%d of the first %d messages never shown: %v; bob's last lines:\n%s\nalice's last lines:\n%s", len(missing), upTo, missing[:min(len(missing), 30)], strings.Join(last, "\n"), strings.Join(alast, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countSent counts the "sent" events p printed.
func countSent(p *proc) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := 0
	for _, l := range p.lines {
		if strings.Contains(l, `"event":"sent"`) {
			k++
		}
	}
	return k
}
