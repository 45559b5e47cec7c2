package client

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"
)

// AudioSink receives the Opus RTP packets of a call.
type AudioSink interface {
	WriteRTP(*rtp.Packet) error
	Close() error
}

// Config configures a Client.
type Config struct {
	// Server is the signaling URL: ws://host:port/ws (http:// and a bare
	// host:port are accepted and turned into that form). Required, unless
	// Servers is set.
	Server string
	// Servers lists the signaling URLs of several nodes of one cluster
	// (after Server, if that is set too): the client signs in to the
	// first that answers and, when the connection drops, to the next one
	// at once, backing off only after every node failed in a row.
	Servers []string
	// Name is the handle to sign in as (proto.ValidateName). Required.
	Name string
	// DisplayName is what we call ourselves ("Alice Martin"), sent end to
	// end with each chat message (proto.Chat.Display); empty: none.
	// SetDisplayName changes it.
	DisplayName string
	// Key is the identity key that owns Name. Required.
	Key ed25519.PrivateKey
	// EncKey is the X25519 key offline messages to us are sealed to
	// (offline.go); its public half is announced at sign-in, bound to Key
	// by a signature. LoadOrCreateEncKey keeps one next to the identity.
	// Nil derives one from Key (HKDF-SHA256 under its own label), so the
	// same identity always announces the same key.
	EncKey *ecdh.PrivateKey
	// Agent describes the client to the server (logs only).
	Agent string

	// SettingEngine, when set, adjusts the WebRTC setting engine of every
	// peer connection: tests restrict ICE to loopback or a namespace here,
	// and relays plug in a proxy dialer.
	SettingEngine func(*webrtc.SettingEngine)
	// ICEServers are used in addition to the ones the server hands out.
	ICEServers []webrtc.ICEServer
	// ICETransportPolicy "relay" forces relayed paths (for tests and for
	// users who hide their address); empty means all.
	ICETransportPolicy webrtc.ICETransportPolicy

	// AudioSource makes the audio source for a call with peer. Nil sends
	// Opus silence, so media flows even on a machine without a microphone.
	AudioSource func(peer string) (audio.Source, error)
	// AudioSink makes the sink for audio received from peer. Nil discards
	// it (packets are still counted).
	AudioSink func(peer string) (AudioSink, error)
	// AutoAnswer answers incoming calls at once.
	AutoAnswer bool

	// Store, when set, stores every received message before its delivery
	// receipt is sent (offline.go). Nil keeps nothing.
	Store MessageStore
	// Outbox, when set, keeps what Send accepted until its receipt, across
	// restarts (outbox.go; internal/history implements it). Nil keeps it
	// in memory.
	Outbox Outbox
	// Accept, when set, decides whom we take messages and calls from:
	// false refuses them, and the sender is told (not_accepted) rather
	// than left sending. Nil accepts everyone.
	Accept func(peer string) bool
	// PeerKey, when set, returns the identity key the user trusts for a
	// peer (nil if none): offline messages are sealed only to an
	// encryption key bound to it, and sealed messages from another key
	// are refused. Nil trusts presence.
	PeerKey func(name string) ed25519.PublicKey

	// Contacts are the people whose presence the client asks the server
	// for from the start (contacts.go); AddContacts adds more.
	Contacts []string
	// OnlineDirectory is how many people online the client follows
	// through the server's directory (a watched page; on a server with
	// fewer people online it stays complete and live). Zero means
	// proto.MaxDirectoryLimit; negative follows none.
	OnlineDirectory int

	// NATReport, when set, is sent to the server at sign-in.
	NATReport *proto.NATReport
	// DiscoverNAT, when set, makes the client find its NAT itself after
	// each sign-in and send the report to the server (natreport.go).
	DiscoverNAT *NATDiscovery
	// TLS configures a wss:// (https://) server connection: RootCAs for a
	// private CA. Nil uses the system's roots.
	TLS *tls.Config
	// Dial, when set, opens the TCP connection to the signaling server
	// (the WebSocket dialer's NetDialContext): tests dial from inside a
	// network namespace. Nil uses the system dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Relay configures relaying through supernodes (relay.go). The zero
	// value relays when needed.
	Relay RelayConfig
	// Files configures file transfer (files.go). The zero value sends
	// files and declines offers.
	Files FileConfig
	// Path tunes how links find and keep their path: failover to a
	// standby pair, when a link without any path gives up (path.go). The
	// zero value is what the binaries use.
	Path PathConfig

	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// signaling reconnects. Zero means 250 ms and 15 s.
	ReconnectMin, ReconnectMax time.Duration
	// DeliveryTimeout is how long a sent message waits for its receipt
	// before it is sent again through the server. Zero means 3 s.
	DeliveryTimeout time.Duration
	// StatsInterval is how often a StatsEvent is emitted during a call.
	// Zero means 1 s.
	StatsInterval time.Duration
	// Logger receives logs. Nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Server == "" && len(c.Servers) > 0 {
		c.Server = c.Servers[0]
	}
	if c.Server == "" || c.Name == "" || len(c.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: Server, Name and Key are required", ErrBadConfig)
	}
	urls := []string{sigdial.URL(c.Server)}
	for _, u := range c.Servers {
		if u = sigdial.URL(u); !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	c.Servers = urls
	if err := proto.ValidateRegisterName(c.Name); err != nil {
		return err
	}
	if c.DisplayName != "" {
		if err := proto.ValidateDisplayName(c.DisplayName); err != nil {
			return err
		}
	}
	c.Server = sigdial.URL(c.Server)
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 250 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 15 * time.Second
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 3 * time.Second
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = time.Second
	}
	c.Path.setDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.EncKey == nil {
		k, err := encKeyFromIdentity(c.Key)
		if err != nil {
			return fmt.Errorf("%w: encryption key: %v", ErrBadConfig, err)
		}
		c.EncKey = k
	} else if c.EncKey.Curve() != ecdh.X25519() {
		return fmt.Errorf("%w: EncKey must be an X25519 key", ErrBadConfig)
	}
	if c.Agent == "" {
		c.Agent = "parley-go"
	}
	return nil
}

// Client is a Parley user session. New, then Run; use the methods from any
// goroutine and read Events.
type Client struct {
	cfg    Config
	log    *slog.Logger
	events *eventQueue
	box    *mailbox
	outbox Outbox

	closeOnce sync.Once
	closed    chan struct{}

	// Owned by the loop goroutine (run), never touched elsewhere.
	sig         *sigConn // current signaling connection, nil while offline
	signedIn    bool
	everReady   bool
	fatal       error // why sign-in stopped for good (Run returns it)
	iceServers  []webrtc.ICEServer
	presence    map[string]proto.Presence
	unconfirmed map[string]bool // online before our reconnect, absent from its welcome, link still up (signaling.go)
	links       map[string]*link
	natHints    map[string]proto.NATType // peer -> NAT type from its last offer or answer
	calls       map[string]*call
	chat        chatState
	contacts    contactState         // whose presence we ask for (contacts.go)
	waiters     map[string]waiter    // envelope id -> ack/error callback
	sealRate    *rate.Limiter        // paces sealed messages under the server's rate limit (chat.go)
	insecure    map[string]time.Time // peer -> when its tampered link was refused (sdpsig.go)
	nat         natState             // NAT discovery (natreport.go)
	relay       *relayer             // supernodes and their connections (relay.go)
	files       *files               // file transfers (files.go)

	display atomic.Pointer[string] // our display name (SetDisplayName), read by any goroutine
}

// New validates cfg and builds a client. It does not connect; Run does.
func New(cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:         cfg,
		log:         cfg.Logger.With("user", cfg.Name),
		box:         newMailbox(),
		closed:      make(chan struct{}),
		presence:    map[string]proto.Presence{},
		unconfirmed: map[string]bool{},
		links:       map[string]*link{},
		natHints:    map[string]proto.NATType{},
		calls:       map[string]*call{},
		chat:        newChatState(),
		contacts:    newContactState(cfg.Contacts),
		waiters:     map[string]waiter{},
		sealRate:    rate.NewLimiter(sealedPerSecond, sealedBurst),
		insecure:    map[string]time.Time{},
		outbox:      cfg.Outbox,
	}
	if c.outbox == nil {
		c.outbox = newMemOutbox()
	}
	c.display.Store(&cfg.DisplayName)
	c.relay = newRelayer(c)
	if err := c.initFiles(); err != nil {
		return nil, err
	}
	c.events = newEventQueue() // last: its goroutine runs from here on
	for _, ev := range c.pendingOffers() {
		c.events.push(ev) // offers a previous run left unanswered
	}
	return c, nil
}

// Name is the client's display name.
func (c *Client) Name() string { return c.cfg.Name }

// DisplayName is the display name our messages carry ("" for none).
func (c *Client) DisplayName() string { return *c.display.Load() }

// SetDisplayName changes the display name the next messages carry
// (proto.ValidateDisplayName; "" sends none).
func (c *Client) SetDisplayName(s string) error {
	if s != "" {
		if err := proto.ValidateDisplayName(s); err != nil {
			return err
		}
	}
	c.display.Store(&s)
	return nil
}

// Events delivers what happens, in order. The channel closes after Run returns.
func (c *Client) Events() <-chan Event { return c.events.out }

// Close stops Run.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// Run signs in and serves until ctx is done or Close is called,
// reconnecting with exponential backoff whenever the signaling connection
// drops. Calls in progress survive a signaling reconnect (and a server
// restart). When the server refuses the name for good (name_taken,
// bad_name) Run stops and returns an error wrapping ErrCannotSignIn and
// the server's *proto.Error.
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	sigEvents := make(chan sigEvent, 64)
	c.box.post(c.loadOutbox) // what a previous run left unsent (chat.go)
	c.box.post(c.loadHeld)   // and what it kept waiting for an earlier message
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.dialLoop(ctx, sigEvents)
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	defer func() {
		c.shutdown()
		wg.Wait()
		c.events.close()
	}()
	for {
		select {
		case <-ctx.Done():
			return c.fatal
		case ev := <-sigEvents:
			c.onSigEvent(ev)
		case <-c.box.wake:
			for _, f := range c.box.take() {
				f()
			}
		case now := <-tick.C:
			c.onTick(now)
		}
	}
}

// do runs f on the loop and waits for it.
func (c *Client) do(ctx context.Context, f func() error) error {
	errc := make(chan error, 1)
	c.box.post(func() { errc <- f() })
	return c.await(ctx, errc)
}

// await waits for the answer on errc, the end of ctx or the client's close.
func (c *Client) await(ctx context.Context, errc <-chan error) error {
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return ErrClosed
	}
}

// Presence returns what the client knows of every user, sorted by name;
// before the first sign-in an unauthenticated error (it knows nobody yet).
func (c *Client) Presence(ctx context.Context) ([]proto.Presence, error) {
	var out []proto.Presence
	err := c.do(ctx, func() error {
		if !c.everReady {
			return proto.Errorf(proto.CodeUnauthenticated, "not signed in yet: who is online is known once signed in (the ready event)")
		}
		for _, p := range c.presence {
			out = append(out, p)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// SetStatus sets our presence to online or away.
func (c *Client) SetStatus(ctx context.Context, st proto.Status) error {
	return c.do(ctx, func() error {
		return c.sendSig(proto.TypePresence, "", &proto.Presence{Status: st})
	})
}

// shutdown closes every link and ends every call (loop goroutine).
func (c *Client) shutdown() {
	for peer := range c.calls {
		c.endCall(peer, "client closed", false)
	}
	for peer, l := range c.links {
		c.closeLink(peer, l, "client closed", true)
	}
	c.natStop()
	c.filesShutdown()
	c.relay.close()
	if c.sig != nil {
		c.sig.close()
		c.sig = nil
	}
}

// onTick drives timers: message resends, call stats, link timeouts.
func (c *Client) onTick(now time.Time) {
	c.waitersTick(now)
	c.chatTick(now)
	c.callTick(now)
	c.linkTick(now)
	c.filesTick(now)
}

func randomID() string {
	b := make([]byte, 9)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
