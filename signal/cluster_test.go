package signal_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
)

// clusterNode is one node of an in-process cluster.
type clusterNode struct {
	*signal.Server
	url    string // ws://127.0.0.1:PORT/ws
	cancel context.CancelFunc
	done   chan error
}

// freePorts reserves n loopback TCP ports (listens and closes: the nodes
// must know each other's route addresses before any starts).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startCluster starts n signaling nodes whose embedded NATS servers form
// one cluster on loopback (JetStream replicas 3), each serving on its own
// port, and waits for all of them.
func startCluster(t *testing.T, n int, mod func(i int, c *signal.Config)) []*clusterNode {
	t.Helper()
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	nodes := make([]*clusterNode, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := signal.Config{
				DataDir: t.TempDir(),
				NATS: signal.NATSConfig{
					ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
					Routes:        routes,
					ServerName:    fmt.Sprintf("n%d", i+1),
					Replicas:      3,
				},
			}
			if mod != nil {
				mod(i, &cfg)
			}
			srv, err := signal.New(cfg)
			if err != nil {
				errs[i] = err
				return
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				srv.Close()
				errs[i] = err
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			nd := &clusterNode{Server: srv, url: "ws://" + ln.Addr().String() + "/ws", cancel: cancel, done: make(chan error, 1)}
			go func() { nd.done <- srv.Serve(ctx, ln) }()
			nodes[i] = nd
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		var wg sync.WaitGroup // all at once: the last ones would wait for a quorum
		for _, nd := range nodes {
			if nd != nil {
				wg.Add(1)
				go func() { defer wg.Done(); nd.stop(t) }()
			}
		}
		wg.Wait()
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	return nodes
}

func (nd *clusterNode) stop(t *testing.T) {
	nd.cancel()
	if err := <-nd.done; err != nil && !errors.Is(err, signal.ErrClosed) {
		t.Errorf("node: %v", err)
	}
	nd.done <- nil // stopped: a second stop returns at once
}

// TestClusterOfThree (issue 15): three nodes, each a `parley serve` with
// its embedded NATS, form one cluster. Alice on node 1 chats with and
// calls bob on node 2; node 2 dies; bob moves to node 3 in seconds and the
// call keeps its audio; messages left through node 1 for someone offline
// are delivered once by node 3; a name taken on node 1 cannot be taken on
// node 3.
func TestClusterOfThree(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	// A name registered on node 1 cannot be taken on node 3.
	login(t, n1.url, "erin", nil).conn.Close()
	c, challenge := dial(t, n3.url)
	c.send(proto.TypeAuth, "a", "", proto.SignAuth(newKey(), challenge, "erin"))
	c.expectError(proto.CodeNameTaken)

	var stops []func()
	peer := func(name string, servers []string, mod func(*client.Config)) (*client.Client, *testutil.Recorder[client.Event]) {
		_, key, _ := ed25519.GenerateKey(nil)
		cfg := client.Config{Servers: servers, Name: name, Key: key, SettingEngine: client.LoopbackOnly,
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
		if mod != nil {
			mod(&cfg)
		}
		cl, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ev := testutil.Record(cl.Events())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); cl.Run(ctx) }()
		stop := sync.OnceFunc(func() { cancel(); <-done })
		stops = append(stops, stop)
		t.Cleanup(stop)
		return cl, ev
	}
	isReady := func(reconnect bool) func(client.Event) bool {
		return func(e client.Event) bool { r, ok := e.(client.ReadyEvent); return ok && r.Reconnect == reconnect }
	}
	online := func(name string) func(client.Event) bool {
		return func(e client.Event) bool {
			p, ok := e.(client.PresenceEvent)
			return ok && p.Name == name && p.Online()
		}
	}

	bob, bobEv := peer("bob", []string{n2.url, n3.url}, func(c *client.Config) { c.AutoAnswer = true })
	bobEv.Wait(t, 20*time.Second, "bob signed in to node 2", isReady(false))
	alice, aliceEv := peer("alice", []string{n1.url}, func(c *client.Config) { c.Contacts = []string{"bob"} })
	aliceEv.Wait(t, 20*time.Second, "alice hears bob (node 2) on node 1", online("bob"))
	if got := n2.Online(); fmt.Sprint(got) != "[bob]" {
		t.Fatalf("node 2 holds %v", got)
	}

	// Presence crosses nodes: bob (node 2) goes away, alice (node 1) sees it.
	ctx := context.Background()
	mark := aliceEv.Len()
	changed := time.Now()
	if err := bob.SetStatus(ctx, proto.StatusAway); err != nil {
		t.Fatal(err)
	}
	aliceEv.WaitSince(t, mark, 5*time.Second, "bob away, across nodes", func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == "bob" && p.Status == proto.StatusAway
	})
	t.Logf("presence from node 2 to node 1 in %v", time.Since(changed).Round(100*time.Microsecond))
	bob.SetStatus(ctx, proto.StatusOnline)

	id, err := alice.Send(ctx, "bob", "hello across nodes")
	if err != nil {
		t.Fatal(err)
	}
	bobEv.Wait(t, 20*time.Second, "bob gets alice's message", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == "alice" && m.Text == "hello across nodes"
	})
	aliceEv.Wait(t, 20*time.Second, "delivered", func(e client.Event) bool { d, ok := e.(client.DeliveredEvent); return ok && d.ID == id })

	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	received := func(min uint32) func(client.Event) bool {
		return func(e client.Event) bool {
			s, ok := e.(client.StatsEvent)
			return ok && s.With == "bob" && s.RTPPacketsReceived >= min
		}
	}
	stats := aliceEv.Wait(t, 20*time.Second, "audio from bob", received(20)).(client.StatsEvent)

	// Node 2 dies. Bob is on node 3 within 5 s; the call goes on.
	mark = bobEv.Len()
	killed := time.Now()
	n2.Kill()
	bobEv.WaitSince(t, mark, 5*time.Second, "bob signed in again (node 3)", isReady(true))
	moved := time.Since(killed)
	testutil.Eventually(t, 5*time.Second, "node 3 holds bob", func() bool { return fmt.Sprint(n3.Online()) == "[bob]" })
	aliceEv.WaitSince(t, aliceEv.Len(), 20*time.Second, "audio keeps flowing", received(stats.RTPPacketsReceived+100))
	if n := aliceEv.Count(func(e client.Event) bool { c, ok := e.(client.CallEvent); return ok && c.State == client.CallEnded }); n != 0 {
		t.Fatal("the call ended when node 2 died")
	}
	t.Logf("bob back (on node 3) %v after node 2 died", moved.Round(time.Millisecond))
	if err := alice.Hangup(ctx, "bob"); err != nil {
		t.Fatal(err)
	}

	// Dave is offline: what alice leaves through node 1 is delivered once
	// by node 3 (after node 2's death, JetStream has new leaders).
	_, daveKey, _ := ed25519.GenerateKey(nil)
	_, daveEv := peer("dave", []string{n3.url}, func(c *client.Config) { c.Key = daveKey })
	daveEv.Wait(t, 20*time.Second, "dave signed in (and announced his encryption key)", isReady(false))
	stops[len(stops)-1]()
	testutil.Eventually(t, 10*time.Second, "dave offline", func() bool { return len(n3.Online()) == 1 })
	if err := alice.AddContacts(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		id, err := alice.Send(ctx, "dave", fmt.Sprint("while you were out ", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		aliceEv.Wait(t, 30*time.Second, "stored "+id, func(e client.Event) bool { s, ok := e.(client.StoredEvent); return ok && s.ID == id })
	}
	_, daveEv = peer("dave", []string{n3.url}, func(c *client.Config) { c.Key = daveKey })
	for i := range 3 {
		text := fmt.Sprint("while you were out ", i)
		daveEv.Wait(t, 20*time.Second, text, func(e client.Event) bool { m, ok := e.(client.MessageEvent); return ok && m.Text == text })
	}
	for _, id := range ids {
		aliceEv.Wait(t, 20*time.Second, "delivered "+id, func(e client.Event) bool { d, ok := e.(client.DeliveredEvent); return ok && d.ID == id })
	}
	if n := daveEv.Count(func(e client.Event) bool { _, ok := e.(client.MessageEvent); return ok }); n != 3 {
		t.Fatalf("dave was shown %d messages, want 3", n)
	}
	testutil.Eventually(t, 10*time.Second, "nothing waiting for dave", func() bool { n, _ := n1.OfflineWaiting("dave"); return n == 0 })
}
