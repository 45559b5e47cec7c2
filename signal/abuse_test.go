package signal_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// replyToRings answers each of the want rings victim gets with a
// decline, at once (as a client that refuses strangers does); done closes
// after the last.
func replyToRings(victim *wsClient, want int) (done chan error) {
	done = make(chan error, 1)
	go func() {
		for n := 0; n < want; {
			env, err := victim.tryRead(10 * time.Second)
			if err != nil {
				done <- err
				return
			}
			if env.Type == proto.TypeRing {
				s, _ := proto.DecodeBody[*proto.CallSignal](env)
				n++
				raw, _ := proto.Encode(mustEnv(proto.TypeDecline, "", env.From, &proto.CallSignal{Call: s.Call}))
				victim.conn.WriteMessage(1, raw)
			}
		}
		done <- nil
	}()
	return done
}

// quietUntilPing reads c's frames until the ack of a ping: c is connected.
func quietUntilPing(t *testing.T, c *wsClient) {
	t.Helper()
	c.send(proto.TypePing, "alive", "", nil)
	for {
		if env := c.read(); env.Type == proto.TypeAck {
			if a, _ := proto.DecodeBody[*proto.Ack](env); a.Ref == "alive" {
				return
			}
		}
	}
}

func mustEnv(t proto.Type, id, to string, b proto.Body) *proto.Envelope {
	env, err := proto.New(t, id, to, b)
	if err != nil {
		panic(err)
	}
	return env
}

// TestOwnRepliesNeverKnockAUserOff (issue 10 item 3): several identities
// ring a victim, each within its own limit; the victim declines every
// ring at once, far past its own rate limit. Replies never count as its
// violations: it stays connected. (Before, each excess reply counted, and
// the victim was closed after MaxViolations.)
func TestOwnRepliesNeverKnockAUserOff(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{RateLimit: 20, RateBurst: 20, MaxViolations: 30, RecipientRate: 1000, RecipientBurst: 1000})
	victim := login(t, srv.URL, "victim", nil)
	done := replyToRings(victim, 60)
	var attackers []*wsClient
	for i := range 4 {
		a := login(t, srv.URL, fmt.Sprintf("attacker%d", i), nil)
		attackers = append(attackers, a)
		for j := range 15 {
			a.send(proto.TypeRing, "", "victim", &proto.CallSignal{Call: fmt.Sprintf("c%d-%d", i, j)})
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the victim, reading 60 rings: %v", err)
	}
	if len(srv.Online()) != 5 {
		t.Fatalf("online %v: the victim was knocked off", srv.Online())
	}
	// Still connected, both ways (its replies still pass).
	chatRoundTrip(t, attackers[0], victim, "still-here")
	chatRoundTrip(t, victim, attackers[0], "still-here-2")
}

// TestFloodThrottlesSendersNotTheTarget (issue 10 item 3): past a
// recipient's inbound limit the senders are told rate_limited; the target
// gets no more than its limit lets through and stays connected, and the
// senders stay connected too.
func TestFloodThrottlesSendersNotTheTarget(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{RecipientRate: 1, RecipientBurst: 10})
	victim := login(t, srv.URL, "victim", nil)
	bystander := login(t, srv.URL, "bystander", nil)
	var attackers []*wsClient
	for i := range 3 {
		attackers = append(attackers, login(t, srv.URL, fmt.Sprintf("attacker%d", i), nil))
	}
	refused := 0
	for i, a := range attackers {
		for j := range 10 {
			id := fmt.Sprintf("r%d-%d", i, j)
			a.send(proto.TypeRead, id, "victim", &proto.Receipt{ID: id})
			for {
				env := a.read()
				if env.Type == proto.TypeAck {
					break
				}
				if env.Type == proto.TypeError {
					if e, _ := proto.DecodeBody[*proto.Error](env); e.Ref == id {
						if e.Code != proto.CodeRateLimited {
							t.Fatalf("refused with %s", e.Code)
						}
						refused++
						break
					}
				}
			}
		}
	}
	if refused < 15 {
		t.Fatalf("%d of 30 refused; the victim's limit lets about 10 through", refused)
	}
	if len(srv.Online()) != 5 {
		t.Fatalf("online %v", srv.Online())
	}
	quietUntilPing(t, victim) // still connected
	chatRoundTrip(t, attackers[0], bystander, "sender-ok")
}

// TestMailboxQuotaPerSender (issue 10 item 4): one sender cannot fill
// someone's mailbox; others can still leave messages.
func TestMailboxQuotaPerSender(t *testing.T) {
	// By default one sender may fill a quarter of a mailbox.
	srv := signaltest.Start(t, signal.Config{Offline: signal.OfflineLimits{MaxMessages: 8}})
	login(t, srv.URL, "bob", nil).conn.Close()
	mallory := login(t, srv.URL, "mallory", nil)
	accepted := 0
	for i := range 8 {
		id := fmt.Sprint("junk", i)
		mallory.send(proto.TypeSealed, id, "bob", sealFor(t, mallory, id, "junk"))
		for {
			env := mallory.read()
			if env.Type == proto.TypeAck {
				accepted++
				break
			}
			if env.Type == proto.TypeError {
				e, _ := proto.DecodeBody[*proto.Error](env)
				if e.Code != proto.CodeOverBudget || !strings.Contains(e.Message, "per sender") {
					t.Fatalf("junk %d: %+v", i, e)
				}
				break
			}
		}
	}
	if accepted != 2 {
		t.Fatalf("mallory left %d messages, want her quota of 2", accepted)
	}
	alice := login(t, srv.URL, "alice", nil)
	alice.send(proto.TypeSealed, "real", "bob", sealFor(t, alice, "real", "hello"))
	if env := alice.readUntil(proto.TypeAck); env == nil {
		t.Fatal("no ack")
	}
	if n, _ := srv.OfflineWaiting("bob"); n != 3 {
		t.Fatalf("%d waiting, want 3", n)
	}

	// The operator's view (serve's status page): counts and sizes, no names.
	login(t, srv.URL, "carol", nil).conn.Close()
	alice.send(proto.TypeSealed, "c1", "carol", sealFor(t, alice, "c1", "hi carol"))
	if env := alice.readUntil(proto.TypeAck); env == nil {
		t.Fatal("no ack")
	}
	st, err := srv.MailboxStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 4 || st.Mailboxes != 2 || st.Largest != 3 || st.Bytes <= 0 || st.StoreBytes < st.Bytes || st.Budget <= 0 {
		t.Fatalf("mailbox stats %+v, want 4 messages in 2 mailboxes, the fullest holding 3", st)
	}
}

// TestRefusedMessageDeleted (issue 10 item 4): a message the recipient
// refuses (a receipt with a code) is deleted, never delivered again, and
// the sender hears the refusal.
func TestRefusedMessageDeleted(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	bobKey, malloryKey := newKey(), newKey()
	login(t, srv.URL, "bob", bobKey).conn.Close()
	mallory := login(t, srv.URL, "mallory", malloryKey)
	mallory.send(proto.TypeSealed, "j1", "bob", sealFor(t, mallory, "j1", "cannot be opened by bob"))
	mallory.readUntil(proto.TypeAck)
	mallory.conn.Close()
	bob := login(t, srv.URL, "bob", bobKey)
	env := bob.readUntil(proto.TypeSealed)
	bob.send(proto.TypeDelivered, "rj", "mallory", &proto.Receipt{ID: "j1", Refused: proto.CodeCannotOpen})
	if a, _ := proto.DecodeBody[*proto.Ack](bob.readUntil(proto.TypeAck)); a.Ref != "rj" || env.From != "mallory" {
		t.Fatalf("ack %+v for a message from %s", a, env.From)
	}
	if n, _ := srv.OfflineWaiting("bob"); n != 0 {
		t.Fatalf("%d still waiting", n)
	}
	bob.conn.Close()
	bob = login(t, srv.URL, "bob", bobKey)
	if env, err := bob.tryRead(300 * time.Millisecond); err == nil && env.Type == proto.TypeSealed {
		t.Fatalf("refused message delivered again: %s", env.Body)
	}
	// Mallory, offline meanwhile, hears of the refusal at sign-in.
	mallory = login(t, srv.URL, "mallory", malloryKey)
	env = mallory.readUntil(proto.TypeSealedReceipt)
	if r, _ := proto.DecodeBody[*proto.Receipt](env); r.ID != "j1" || r.Refused != proto.CodeCannotOpen || env.From != "bob" {
		t.Fatalf("mallory heard %s from %s", env.Body, env.From)
	}
}

// TestRegistrationLimitedPerAddress (issue 10 item 5): an address may
// register only so many new names; names it has still sign in.
func TestRegistrationLimitedPerAddress(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{Registration: signal.RegistrationLimits{PerAddr: 3, PerAddrEvery: time.Hour, Exempt: []netip.Prefix{}}})
	keys := map[string]ed25519.PrivateKey{}
	for i := range 3 {
		n := fmt.Sprint("name", i)
		keys[n] = newKey()
		login(t, srv.URL, n, keys[n]).conn.Close()
	}
	c, challenge := dial(t, srv.URL)
	c.send(proto.TypeAuth, "a", "", proto.SignAuth(newKey(), challenge, "name3"))
	if e := c.expectError(proto.CodeRateLimited); !strings.Contains(e.Message, "new names from your address") {
		t.Fatalf("refusal %+v", e)
	}
	login(t, srv.URL, "name0", keys["name0"])
}

// TestStoreBudget (issue 10 item 5): past the store's budget no new name
// is registered and no new mail stored, with a clear error; names that
// exist still sign in.
func TestStoreBudget(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{StoreBudget: 1})
	aliceKey := newKey()
	// The first registrations find the store empty.
	login(t, srv.URL, "alice", aliceKey).conn.Close()
	login(t, srv.URL, "bob", nil).conn.Close()
	var e *proto.Error
	testutil.Eventually(t, 10*time.Second, "a refused registration", func() bool {
		c, challenge := dial(t, srv.URL)
		c.send(proto.TypeAuth, "a", "", proto.SignAuth(newKey(), challenge, fmt.Sprint("n", time.Now().UnixNano())))
		env := c.read()
		if env.Type != proto.TypeError {
			return false
		}
		e, _ = proto.DecodeBody[*proto.Error](env)
		return true
	})
	if e.Code != proto.CodeOverBudget || !strings.Contains(e.Message, "store is full") {
		t.Fatalf("refusal %+v", e)
	}
	alice := login(t, srv.URL, "alice", aliceKey)
	alice.send(proto.TypeSealed, "m", "bob", sealFor(t, alice, "m", "x"))
	if e := alice.expectError(proto.CodeOverBudget); !strings.Contains(e.Message, "store is full") {
		t.Fatalf("mail refused with %+v", e)
	}
}

// TestUnusedNamesExpire (issue 10 item 5): a name nobody used after
// registering it is freed after a while, with what waited for it; a name
// used again stays.
func TestUnusedNamesExpire(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{Registration: signal.RegistrationLimits{UnusedTTL: 500 * time.Millisecond, SweepEvery: 100 * time.Millisecond}})
	login(t, srv.URL, "throwaway", nil).conn.Close()
	keeperKey := newKey()
	login(t, srv.URL, "keeper", keeperKey).conn.Close()
	login(t, srv.URL, "keeper", keeperKey).conn.Close() // used: signed in again
	alice := login(t, srv.URL, "alice", nil)
	alice.send(proto.TypeSealed, "m1", "throwaway", sealFor(t, alice, "m1", "x"))
	alice.readUntil(proto.TypeAck) // sending is a use of alice's name too
	testutil.Eventually(t, 15*time.Second, "throwaway expired", func() bool {
		n, _ := srv.OfflineWaiting("throwaway")
		return n == 0 && srv.Stats().ExpiredNames >= 1
	})
	login(t, srv.URL, "throwaway", nil) // free again: another key takes it
	c, challenge := dial(t, srv.URL)
	c.send(proto.TypeAuth, "a", "", proto.SignAuth(newKey(), challenge, "keeper"))
	c.expectError(proto.CodeNameTaken)
	login(t, srv.URL, "alice", alice.key)
}
