package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
)

var matrixOut = flag.String("matrix.out", "", "also write the call matrix as a markdown table to this file")

// matrixParallel is how many pairs call at once. Each pair is two pion
// peers, two NAT discoveries and 50 packets/s of audio each way; on two
// cores under -race more than this starts to eat into ICE's timers.
const matrixParallel = 4

// outcome is how a call between two homes ends up.
type outcome string

const (
	direct outcome = "direct"  // peer to peer (host, srflx or prflx pair)
	relay  outcome = "relay"   // through a relay (TURN or a supernode)
	noPath outcome = "no path" // ended by ICE failure with the no-path reason
)

// scenario is one way of placing the matrix's calls: what runs besides
// signaling and STUN, how clients are set up, and what theory predicts.
// The supernode work adds a relay scenario next to stunOnly, whose expect
// turns the no-path cells into relay.
type scenario struct {
	name string
	// setup starts the scenario's extra services in w and returns the
	// client options that use them. Nil means none.
	setup func(t *testing.T, w *world) []peerOpts
	// expect is the outcome for a call from a home of kind a to one of b.
	expect func(a, b natlab.NATKind) outcome
	// world, when set, builds the lab and its services instead of
	// newWorld (and setup): the services of `parley serve` alone.
	world func(t *testing.T) (*world, []peerOpts)
	// via, when set, is the supernode every relayed call must name.
	via string
}

// stunOnly: signaling and STUN, no relay.
var stunOnly = scenario{name: "stun-only", expect: expectSTUNOnly}

// expectSTUNOnly is the theory for calls with STUN but no relay (RFC 4787
// sections 4 and 5; ICE as RFC 8445 runs it):
//   - UDP blocked on either side: ICE over UDP cannot start. No path.
//   - Endpoint-independent mapping on both sides (none, full, restricted,
//     port-restricted): each side's srflx candidate is the address the other
//     reaches, and each side's own checks open its filter for the other.
//   - Symmetric (address-and-port-dependent mapping) against a side whose
//     filter admits a new port from an address it has sent to (none, full,
//     restricted): the symmetric side's checks arrive from a port nobody
//     advertised; the peer learns it as a peer-reflexive candidate and
//     answers there.
//   - Symmetric against port-restricted or symmetric: the port the
//     symmetric side uses towards the peer is never one the peer has sent
//     to, so its filter drops the checks. No path.
func expectSTUNOnly(a, b natlab.NATKind) outcome {
	if a == natlab.UDPBlocked || b == natlab.UDPBlocked {
		return noPath
	}
	if a > b {
		a, b = b, a
	}
	if b == natlab.Symmetric && (a == natlab.PortRestricted || a == natlab.Symmetric) {
		return noPath
	}
	return direct
}

// TestExpectationsMatchProto holds the matrix's theory and the one the
// server uses to plan relays (proto.NeedsRelay) to the same answer.
func TestExpectationsMatchProto(t *testing.T) {
	for _, a := range natlab.Kinds {
		for _, b := range natlab.Kinds {
			want := direct
			if proto.NeedsRelay(a.NATType(), b.NATType()) {
				want = noPath
			}
			if got := expectSTUNOnly(a, b); got != want {
				t.Errorf("%s -> %s: matrix expects %s, proto.NeedsRelay says %s", a, b, got, want)
			}
		}
	}
}

// cell is one measured call of the matrix.
type cell struct {
	a, b          natlab.NATKind
	want, got     outcome
	setup         time.Duration // Call -> connected, or Call -> ended
	first         outcome       // the path it connected on (the first working pair)
	via           string        // the supernode of a relayed call
	local, remote string        // candidate types of the caller's selected pair
	reason        string        // why the call ended, when it did not connect
	natA, natB    proto.NATType // what each client discovered
}

// TestCallMatrix calls between every pair of home NAT kinds with STUN only
// and checks each outcome against theory. Run with -v to see the matrix;
// -args -matrix.out=FILE writes it as markdown.
func TestCallMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab call matrix")
	}
	runMatrix(t, stunOnly)
}

// runMatrix builds one home of every kind on each side (A calls, B
// answers), checks that nat.Discover sees each home's kind, then places
// one call per unordered pair of kinds (same-kind pairs included),
// matrixParallel at a time.
func runMatrix(t *testing.T, sc scenario) {
	var w *world
	var opts []peerOpts
	if sc.world != nil {
		w, opts = sc.world(t)
	} else {
		w = newWorld(t)
		if sc.setup != nil {
			opts = sc.setup(t, w)
		}
	}
	homesA := map[natlab.NATKind]*natlab.Home{}
	homesB := map[natlab.NATKind]*natlab.Home{}
	for i, k := range natlab.Kinds {
		homesA[k] = w.lab.AddHome(fmt.Sprintf("a%d", i), k)
		homesB[k] = w.lab.AddHome(fmt.Sprintf("b%d", i), k)
	}

	t.Run("nat-types", func(t *testing.T) {
		for _, side := range []map[natlab.NATKind]*natlab.Home{homesA, homesB} {
			for _, k := range natlab.Kinds {
				home := side[k]
				t.Run(home.Name+"-"+k.String(), func(t *testing.T) {
					t.Parallel()
					checkNATType(t, w, home)
				})
			}
		}
	})

	var pairs [][2]natlab.NATKind
	for i, a := range natlab.Kinds {
		for _, b := range natlab.Kinds[i:] {
			pairs = append(pairs, [2]natlab.NATKind{a, b})
		}
	}
	cells := make([]cell, len(pairs))
	var mu sync.Mutex // guards cells
	sem := make(chan struct{}, matrixParallel)
	start := time.Now()
	t.Run(sc.name, func(t *testing.T) {
		for i, pr := range pairs {
			t.Run(pr[0].String()+"--"+pr[1].String(), func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				c := callPair(t, w, homesA[pr[0]], homesB[pr[1]], fmt.Sprintf("p%02d", i), sc.expect(pr[0], pr[1]), opts)
				if sc.via != "" && c.got == relay && c.via != sc.via {
					t.Errorf("%s -> %s relayed through %q, want %q", pr[0], pr[1], c.via, sc.via)
				}
				mu.Lock()
				cells[i] = c
				mu.Unlock()
			})
		}
	})
	table := matrixMarkdown(sc.name, cells)
	t.Logf("call matrix (%s), %d pairs in %s:\n%s", sc.name, len(pairs), time.Since(start).Round(time.Second), table)
	if *matrixOut != "" {
		if err := os.WriteFile(*matrixOut, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// checkNATType runs nat.Discover from inside home: it must report the
// behaviour the home router's rules implement.
func checkNATType(t *testing.T, w *world, home *natlab.Home) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := nat.Discover(ctx, nat.DiscoverConfig{
		Server:   w.iceURL,
		Listener: home.Client.Net(),
		RTO:      50 * time.Millisecond,
		Timeout:  400 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	k := home.Kind
	if r.Type != k.NATType() || r.Mapping != k.Mapping() || r.Filtering != k.Filtering() {
		t.Errorf("%s: discovered %s (mapping %q, filtering %q), want %s (%q, %q)",
			home, r.Type, r.Mapping, r.Filtering, k.NATType(), k.Mapping(), k.Filtering())
	}
	if k != natlab.UDPBlocked && !strings.HasPrefix(r.PublicAddr, home.WAN.String()+":") {
		t.Errorf("%s: public address %s, want on %s", home, r.PublicAddr, home.WAN)
	}
}

// callPair signs in a caller in ha and a callee in hb, checks the NAT
// reports they send, and has the caller call. A connected call must carry
// audio both ways; a call without a path must end with the no-path reason
// within noPathWithin.
func callPair(t *testing.T, w *world, ha, hb *natlab.Home, prefix string, want outcome, opts []peerOpts) cell {
	c := cell{a: ha.Kind, b: hb.Kind, want: want}
	ctx := context.Background()
	alice := w.startPeer(t, ha, prefix+"-a", true, opts...)
	bob := w.startPeer(t, hb, prefix+"-b", true, opts...)
	for _, p := range []*peer{alice, bob} {
		ev := p.wait(t, 30*time.Second, "NAT report sent", isNATDone).ev.(client.NATEvent)
		if ev.Err != nil || ev.Report == nil {
			t.Fatalf("%s in %s: NAT discovery: %+v", p.name, p.home, ev)
		}
		if ev.Report.Type != p.home.Kind.NATType() {
			t.Errorf("%s in %s discovered %s", p.name, p.home, ev.Report.Type)
		}
		if w.sig == nil {
			continue // the server runs in its own process
		}
		if r, ok := w.sig.NATReport(p.name); !ok || r.Type != ev.Report.Type {
			t.Errorf("server holds %+v (%v) for %s, want type %s", r, ok, p.name, ev.Report.Type)
		}
	}
	c.natA, c.natB = alice.home.Kind.NATType(), bob.home.Kind.NATType() // as checked above
	alice.wait(t, 15*time.Second, "sees "+bob.name, isOnline(bob.name))

	t0 := time.Now()
	if err := alice.Call(ctx, bob.name); err != nil {
		t.Fatal(err)
	}
	s := alice.wait(t, noPathWithin+10*time.Second, "call settles", callSettled(bob.name))
	ce := s.ev.(client.CallEvent)
	c.setup = s.at.Sub(t0)
	ended := func(with string) func(client.Event) bool {
		return func(e client.Event) bool {
			x, ok := e.(client.CallEvent)
			return ok && x.With == with && x.State == client.CallEnded
		}
	}
	if ce.State == client.CallConnected {
		// Connected on the first working pair (ce.Path); what counts is
		// where the call ends up once renomination has moved it to the
		// best pair, as the stats of half a second of audio later say.
		c.first = outcome(ce.Path)
		st := alice.wait(t, 15*time.Second, "audio from "+bob.name, audioFrom(bob.name, 25)).ev.(client.StatsEvent)
		bob.wait(t, 15*time.Second, "audio from "+alice.name, audioFrom(alice.name, 25))
		c.got, c.via = outcome(st.Path), st.Via
		c.local, c.remote = st.LocalCandidate, st.RemoteCandidate
		if err := alice.Hangup(ctx, bob.name); err != nil {
			t.Error(err)
		}
		bob.wait(t, 15*time.Second, "call ended", ended(alice.name))
	} else {
		c.reason = ce.Reason
		c.got = outcome("ended: " + ce.Reason)
		if strings.Contains(ce.Reason, "no network path") {
			c.got = noPath
			if c.setup > noPathWithin {
				t.Errorf("no-path result after %s, want within %s", c.setup.Round(time.Millisecond), noPathWithin)
			}
		}
		be := bob.wait(t, 15*time.Second, "call ended", ended(alice.name)).ev.(client.CallEvent)
		if c.got == noPath && !strings.Contains(be.Reason, "no network path") {
			t.Errorf("callee's call ended with %q, want the no-path reason too", be.Reason)
		}
	}
	if c.got != want {
		t.Errorf("%s -> %s: %s after %s, want %s", ha, hb, c.got, c.setup.Round(time.Millisecond), want)
	}
	// A symmetric NAT's mapping towards the peer is a port it never
	// advertised: the other side must have learnt it from the checks.
	if c.got == direct && hb.Kind == natlab.Symmetric && c.remote != "prflx" {
		t.Errorf("%s -> %s: selected remote candidate %q, want prflx", ha, hb, c.remote)
	}
	t.Logf("%s -> %s: %s in %s (%s/%s, connected %s) %s", ha.Kind, hb.Kind, c.got, c.setup.Round(time.Millisecond), c.local, c.remote, c.first, c.reason)
	return c
}

// matrixMarkdown renders the cells as a kind x kind table (the matrix is
// symmetric; each unordered pair was called once, A side calling).
func matrixMarkdown(name string, cells []cell) string {
	byPair := map[[2]natlab.NATKind]cell{}
	for _, c := range cells {
		byPair[[2]natlab.NATKind{c.a, c.b}] = c
		byPair[[2]natlab.NATKind{c.b, c.a}] = c
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| %s | %s |\n", name, strings.Join(kindNames(), " | "))
	fmt.Fprintf(&b, "|---|%s\n", strings.Repeat("---|", len(natlab.Kinds)))
	for _, a := range natlab.Kinds {
		row := []string{a.String()}
		for _, k := range natlab.Kinds {
			c, ok := byPair[[2]natlab.NATKind{a, k}]
			switch {
			case !ok || c.got == "":
				row = append(row, "not run")
			case c.got == direct || c.got == relay:
				row = append(row, fmt.Sprintf("%s %.2fs %s/%s", c.got, c.setup.Seconds(), c.local, c.remote))
			default:
				row = append(row, fmt.Sprintf("%s (%.1fs)", c.got, c.setup.Seconds()))
			}
			if ok && c.got != "" && c.got != c.want {
				row[len(row)-1] += " **want " + string(c.want) + "**"
			}
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	return b.String()
}

func kindNames() []string {
	out := make([]string, len(natlab.Kinds))
	for i, k := range natlab.Kinds {
		out[i] = k.String()
	}
	return out
}
