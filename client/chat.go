package client

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/parley-voice/parley/proto"
)

// The life of a chat message, in one place.
//
// Sending. Send queues the message in the outbox (Config.Outbox: durable
// in a profile), numbering it among ours to that peer (Seq), and returns.
// transmit then picks one route: the peer-to-peer data channel when it is
// open (DTLS end to end), else the server, always sealed to the peer's
// encryption key (offline.go): the server learns who, to whom, when and
// how big, never what. A sealed message is stored by the server (its ack
// is a StoredEvent, ✓) until the peer's client takes it, online now or at
// its next sign-in. The receipt (✓✓, a DeliveredEvent) finishes the
// message in the outbox; until then it is sent again: through the server
// when the data channel gave no receipt in time, after every reconnect,
// at the next start, and after a full mailbox (over_budget) empties — it
// is held, never dropped. A receipt may refuse the message instead
// (cannot_open, not_accepted): the outbox finishes it and an ErrorEvent
// says why.
//
// Receiving. Whatever the route, a message goes through receive: a
// stranger's is refused when Config.Accept says so; one already stored is
// acknowledged again and not shown twice (the store's ids, kept across
// restarts); messages are taken in the sender's order (Seq), a later one
// waiting up to gapWait for an earlier one still on its way. A message is
// stored (Config.Store, fsynced) before its receipt is sent, then emitted.

// gapWait is how long a message waits for an earlier one of the same
// sender (by Seq) before it is taken anyway. The sender keeps every message
// until its receipt and sends in order, so an earlier one is late, not
// lost: it comes after a reconnect, or after the server's mailbox made
// room for it.
const gapWait = 15 * time.Second

// maxSeen bounds the ids remembered per peer for duplicate suppression
// when there is no Config.Store (which remembers them all).
const maxSeen = 4096

// outMsg is a message (or file offer) on its way, until its receipt.
type outMsg struct {
	OutMessage
	file       *proto.FileInfo // the offer of a file (files.go); not in the outbox
	lastSent   time.Time       // last transmission on any route
	viaDC      bool            // the last transmission went on the data channel
	inFlight   bool            // sealed and sent, the server's answer awaited
	stored     bool            // the server holds it (acked); the receipt will come
	retryAt    time.Time       // held (mailbox full, no key yet) until then
	warned     bool            // the user was told why it is held
	refusals   int             // the server refused it for now this many times in a row
	needServer bool            // the data channel gave no receipt in time: through the server next
}

// inMsg is a received message waiting for an earlier one.
type inMsg struct {
	chat   proto.Chat
	path   string
	stored bool // kept by a HoldingStore (and acknowledged): Release, not SaveIncoming
}

// hold keeps h until the message before it comes.
func (c *Client) hold(r *recvState, h inMsg) {
	if r.held == nil {
		r.held = map[uint64]inMsg{}
	}
	if len(r.held) == 0 {
		r.gapSince = time.Now()
	}
	r.held[h.chat.Seq] = h
}

// loadHeld takes back the messages a previous run kept waiting for an
// earlier one (loop goroutine, at Run).
func (c *Client) loadHeld() {
	hs, ok := c.cfg.Store.(HoldingStore)
	if !ok {
		return
	}
	held, err := hs.HeldMessages()
	if err != nil {
		c.log.Error("client: held messages", "err", err)
		return
	}
	for _, m := range held {
		c.hold(c.recvFor(m.From), inMsg{chat: proto.Chat{ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.Seq, File: m.File}, path: m.Path, stored: true})
	}
}

// recvState orders one sender's messages.
type recvState struct {
	next     uint64           // the Seq we take next; 0: not known yet
	held     map[uint64]inMsg // later ones, waiting
	gapSince time.Time        // when the oldest waiting one arrived
	typing   time.Time        // last TypingEvent emitted (rate limit)
}

type chatState struct {
	pending map[string]*outMsg // by id
	order   []string           // pending ids in send order
	careful map[string]bool    // peers whose mailbox refused us: one sealed message at a time
	recv    map[string]*recvState
	seen    map[string]map[string]struct{} // peer -> ids received (no Store)
	seenQ   map[string][]string
}

func newChatState() chatState {
	return chatState{pending: map[string]*outMsg{}, careful: map[string]bool{}, recv: map[string]*recvState{},
		seen: map[string]map[string]struct{}{}, seenQ: map[string][]string{}}
}

// Send queues text for peer and returns the message id. It returns once
// the message is in the outbox; DeliveredEvent (or an ErrorEvent for a
// refusal) follows.
func (c *Client) Send(ctx context.Context, peer, text string) (string, error) {
	return c.SendID(ctx, peer, "", text)
}

// SendID is Send with the message id chosen by the caller (a script's
// own id, proto.ValidateID); "" picks a random one. An id already used
// for peer is dropped by the receiver as a duplicate.
func (c *Client) SendID(ctx context.Context, peer, id, text string) (string, error) {
	if id == "" {
		id = randomID()
	} else if err := proto.ValidateID(id); err != nil {
		return "", err
	}
	if peer == c.cfg.Name {
		return "", ErrSelf
	}
	if err := proto.ValidateName(peer); err != nil {
		return "", err
	}
	if err := proto.ValidateText(text); err != nil {
		return "", err
	}
	m := &OutMessage{ID: id, To: peer, Text: text, Time: time.Now().UnixMilli()}
	if err := c.outbox.Queue(m); err != nil {
		return "", err
	}
	return m.ID, c.do(ctx, func() error {
		c.enqueue(&outMsg{OutMessage: *m})
		return nil
	})
}

// loadOutbox takes what a previous run left unsent (loop goroutine, at Run).
func (c *Client) loadOutbox() {
	unsent, err := c.outbox.Unsent()
	if err != nil {
		c.log.Error("client: outbox", "err", err)
		c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeInternal, "could not read the messages waiting to be sent: %v", err)})
		return
	}
	for _, m := range unsent {
		c.enqueue(&outMsg{OutMessage: m})
	}
}

// enqueue makes m pending and sends it when its turn comes (loop goroutine).
func (c *Client) enqueue(m *outMsg) {
	if _, dup := c.chat.pending[m.ID]; dup {
		return // already on its way
	}
	c.chat.pending[m.ID] = m
	c.chat.order = append(c.chat.order, m.ID)
	c.noteTalked(m.To) // contacts.go
	c.pump(m.To, time.Now())
	if p, ok := c.presence[m.To]; ok && p.Online() && c.sig != nil {
		c.ensureLink(m.To) // so later messages can go direct
	}
}

// pump sends what is due of the messages pending for peer, in their order,
// so none overtakes an earlier one on a slower route: a message goes on the
// open data channel only while every earlier one did too; once an earlier
// one is with the server (sealed, in flight or stored), the later ones
// follow it there; behind one held (the server refused it for now, or there
// is no key to seal to yet) they all wait; and after a refusal only that one
// is tried until it gets through (loop goroutine).
func (c *Client) pump(peer string, now time.Time) {
	l := c.links[peer]
	dcOK := l != nil && l.dcOpen
	for _, id := range slices.Clone(c.chat.order) {
		m := c.chat.pending[id]
		if m == nil || m.To != peer {
			continue
		}
		switch {
		case m.stored:
			dcOK = false
			continue
		case m.inFlight:
			if m.refusals > 0 || c.chat.careful[peer] {
				return // one at a time: the rest wait for its answer
			}
			dcOK = false
			continue
		case m.viaDC && !m.needServer:
			continue // on the data channel, its receipt awaited
		case now.Before(m.retryAt):
			return // held: everything after it waits
		}
		if dcOK && !m.needServer {
			b, err := proto.EncodeDC(&proto.DCMessage{Type: proto.DCChat, ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.Seq, File: m.file, Display: c.DisplayName()})
			if err == nil && l.dc.SendText(string(b)) == nil {
				m.lastSent, m.viaDC = now, true
				continue
			}
		}
		if c.sig == nil {
			return // sent on reconnect
		}
		if _, known := c.presence[peer]; !known &&
			c.askPresence(peer, func() { c.pump(peer, time.Now()) }) { // contacts.go
			return // sent when the server has told us about peer
		}
		if !c.sealRate.AllowN(now, 1) {
			return // paced: the next tick goes on
		}
		dcOK = false
		m.lastSent, m.viaDC, m.needServer = now, false, false
		err := c.sendSealed(m) // offline.go
		switch {
		case err == nil:
			if m.refusals > 0 || c.chat.careful[peer] {
				return // one at a time: the rest follow once it is stored
			}
		case errors.Is(err, ErrUnknownPeer):
			c.finish(m, proto.CodeNotFound)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeNotFound, "not delivered: nobody named %s is known to the server", m.To), Ref: m.ID})
		default:
			// No key to seal to yet, or one not bound to the key we
			// trust (a changed key to accept): held, tried again.
			m.retryAt = now.Add(c.cfg.DeliveryTimeout)
			if !m.warned {
				m.warned = true
				c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeForbidden, "not delivered yet to %s: %v; it waits here", m.To, err), Ref: m.ID})
			}
			c.log.Debug("client: message held", "to", m.To, "id", m.ID, "err", err)
			return
		}
	}
}

// onSealedAnswer is the server's answer to a sealed message (loop goroutine).
func (c *Client) onSealedAnswer(m *outMsg, err error) {
	if c.chat.pending[m.ID] != m {
		return
	}
	m.inFlight = false
	switch code := proto.CodeOf(err); {
	case err == nil:
		m.refusals = 0
		if !m.stored {
			m.stored = true
			c.events.push(StoredEvent{ID: m.ID, To: m.To})
		}
		c.pump(m.To, time.Now()) // what waited behind it
	case errors.Is(err, ErrNotSignedIn):
		// The connection dropped first: sent again on reconnect.
	case code == proto.CodeNotFound || code == proto.CodeTooLarge || code == proto.CodeBadRequest || code == proto.CodeForbidden:
		c.finish(m, code)
		c.events.push(ErrorEvent{Err: asProtoError(err), Ref: m.ID})
		c.pump(m.To, time.Now())
	default:
		// over_budget (the peer's mailbox is full), rate_limited,
		// unavailable: held and sent again later, never dropped; the
		// ones after it wait behind it (pump), and until the peer's queue
		// is empty they go one at a time: pipelined into a mailbox at its
		// limit, a later one could be taken while an earlier one is not.
		c.chat.careful[m.To] = true
		m.refusals++
		wait := min(retryAfterRefusal<<min(m.refusals-1, 5), maxRetryAfterRefusal)
		m.retryAt = time.Now().Add(wait)
		c.log.Info("client: message held by the server's refusal", "to", m.To, "id", m.ID, "err", err, "retry", wait)
		if code == proto.CodeOverBudget && m.refusals == 1 {
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeOverBudget, "%s's mailbox is full; the message waits here and is sent again later", m.To), Ref: m.ID})
		}
	}
}

// Sealed messages leave at most this fast (a backlog of thousands after a
// reconnect): under the server's per-connection limit (50/s, burst 200),
// with room for receipts, candidates and the rest.
const (
	sealedPerSecond = 35
	sealedBurst     = 120
)

// retryAfterRefusal is how long a message the server refused for now
// (a full mailbox) first waits before it is sent again; the wait doubles
// up to maxRetryAfterRefusal, and ends when the peer comes online.
const (
	retryAfterRefusal    = time.Second
	maxRetryAfterRefusal = 30 * time.Second
)

// chatPeerOnline sends at once what waits for peer, who just came online
// (its mailbox is being emptied) (loop goroutine).
func (c *Client) chatPeerOnline(peer string) {
	for _, m := range c.chat.pending {
		if m.To == peer && !m.retryAt.IsZero() {
			m.retryAt = time.Time{}
		}
	}
	c.pump(peer, time.Now())
}

func asProtoError(err error) *proto.Error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe
	}
	return proto.Errorf(proto.CodeInternal, "%v", err)
}

// finish ends a pending message: the outbox forgets it.
func (c *Client) finish(m *outMsg, refused proto.Code) {
	delete(c.chat.pending, m.ID)
	if i := slices.Index(c.chat.order, m.ID); i >= 0 {
		c.chat.order = slices.Delete(c.chat.order, i, i+1)
	}
	if c.chat.careful[m.To] && !slices.ContainsFunc(c.chat.order, func(id string) bool { return c.chat.pending[id].To == m.To }) {
		delete(c.chat.careful, m.To) // its queue is empty: pipelining again
	}
	if m.file != nil {
		return // file offers live in the transfer's record (files.go)
	}
	if err := c.outbox.Finish(m.To, m.ID, refused); err != nil {
		c.log.Error("client: outbox", "op", "finish", "err", err)
	}
}

// chatFlush sends pending messages for peer over its newly opened data channel.
func (c *Client) chatFlush(peer string) { c.pump(peer, time.Now()) }

// chatTick sends again what is overdue and takes messages whose gap
// waited long enough (loop goroutine).
func (c *Client) chatTick(now time.Time) {
	due := map[string]bool{}
	for _, m := range c.chat.pending {
		if !m.stored && !m.inFlight && !m.viaDC && m.retryAt.IsZero() {
			due[m.To] = true // waiting for its turn (pacing, a reconnect)
		}
		switch {
		case m.viaDC && !m.needServer && now.Sub(m.lastSent) >= c.cfg.DeliveryTimeout:
			m.needServer = true // the data channel gave no receipt
			due[m.To] = true
		case !m.retryAt.IsZero() && !now.Before(m.retryAt):
			due[m.To] = true
		}
	}
	for peer := range due {
		c.pump(peer, now)
	}
	for from, r := range c.chat.recv {
		if len(r.held) > 0 && now.Sub(r.gapSince) >= gapWait {
			c.skipGap(from, r)
		}
	}
}

// chatOnReconnect sends everything unreceipted again after a signaling
// reconnect, through the server (it may have lost what it held, and dedupes
// what it did not), in order.
func (c *Client) chatOnReconnect() {
	peers := map[string]bool{}
	for _, m := range c.chat.pending {
		m.stored, m.inFlight, m.retryAt, m.refusals = false, false, time.Time{}, 0
		m.needServer = true
		peers[m.To] = true
	}
	now := time.Now()
	for peer := range peers {
		c.pump(peer, now)
	}
}

// receive takes a chat message from peer that came by path ("direct",
// "server"): refused, acknowledged again, held for an earlier one, or
// stored, acknowledged and emitted (loop goroutine).
func (c *Client) receive(from string, m proto.Chat, path string) {
	m.Display = proto.ValidDisplayName(m.Display) // a bad one is dropped, the message kept
	if c.cfg.Accept != nil && !c.cfg.Accept(from) {
		c.sendReceipt(from, m.ID, proto.CodeNotAccepted)
		c.events.push(RefusedEvent{From: from, Kind: "message", ID: m.ID})
		return
	}
	r := c.recvFor(from)
	switch {
	case m.Seq == 0 || r.next == 0 || m.Seq <= r.next:
		// In order, unnumbered, the first we know of, or late (its gap
		// was skipped): taken now.
	default:
		if _, dup := r.held[m.Seq]; dup || len(r.held) >= 1024 {
			if dup && r.held[m.Seq].stored {
				c.sendReceipt(from, m.ID, "") // its receipt was lost
			}
			return
		}
		h := inMsg{chat: m, path: path}
		if hs, ok := c.cfg.Store.(HoldingStore); ok {
			// Stored and acknowledged at once, hidden until its turn: it
			// leaves the sender's outbox and the server's mailbox, so an
			// earlier one is never kept out by it.
			isNew, err := hs.SaveHeld(MessageEvent{From: from, ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.Seq, Path: path, File: m.File, Display: m.Display})
			if err != nil {
				c.log.Error("client: hold message", "from", from, "err", err)
				return // no receipt: the sender tries again
			}
			if !isNew {
				c.sendReceipt(from, m.ID, "")
				return // taken before (a previous run)
			}
			h.stored = true
			c.sendReceipt(from, m.ID, "")
		}
		c.hold(r, h)
		return
	}
	c.take(from, m, path)
	for r.next != 0 {
		h, ok := r.held[r.next]
		if !ok {
			break
		}
		delete(r.held, r.next)
		c.takeHeld(from, h)
	}
	if len(r.held) == 0 {
		r.gapSince = time.Time{}
	}
}

// skipGap takes a sender's waiting messages, in order, although an
// earlier one never came (it may still: it is then shown late).
func (c *Client) skipGap(from string, r *recvState) {
	seqs := make([]uint64, 0, len(r.held))
	for s := range r.held {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	c.log.Info("client: taking messages past a gap", "from", from, "expected", r.next, "got", seqs)
	for _, s := range seqs {
		h := r.held[s]
		delete(r.held, s)
		c.takeHeld(from, h)
	}
	r.gapSince = time.Time{}
}

// takeHeld takes a message that waited: released from the store that kept
// it, or taken as any other.
func (c *Client) takeHeld(from string, h inMsg) {
	if !h.stored {
		c.take(from, h.chat, h.path)
		return
	}
	r := c.recvFor(from)
	if h.chat.Seq >= r.next {
		r.next = h.chat.Seq + 1
	}
	if err := c.cfg.Store.(HoldingStore).Release(from, h.chat.ID); err != nil {
		c.log.Error("client: release message", "from", from, "err", err)
	}
	c.markSeen(from, h.chat.ID)
	c.events.push(MessageEvent{From: from, ID: h.chat.ID, Text: h.chat.Text, Time: h.chat.Time, Seq: h.chat.Seq, Path: h.path, File: h.chat.File, Display: h.chat.Display})
	if h.chat.File != nil {
		c.fileOffered(from, h.chat.ID, *h.chat.File) // files.go
	}
}

// recvFor is the ordering state of from's messages, its next Seq read from
// the store the first time.
func (c *Client) recvFor(from string) *recvState {
	r := c.chat.recv[from]
	if r == nil {
		r = &recvState{}
		if s, ok := c.cfg.Store.(SeqStore); ok {
			if last := s.LastSeq(from); last > 0 {
				r.next = last + 1
			}
		}
		c.chat.recv[from] = r
	}
	return r
}

// take stores m, acknowledges it and emits it once (loop goroutine).
func (c *Client) take(from string, m proto.Chat, path string) {
	r := c.recvFor(from)
	if m.Seq >= r.next {
		r.next = m.Seq + 1
	}
	if c.seenBefore(from, m.ID) {
		c.sendReceipt(from, m.ID, "")
		return
	}
	c.noteTalked(from) // contacts.go
	ev := MessageEvent{From: from, ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.Seq, Path: path, File: m.File, Display: m.Display}
	isNew := true
	if c.cfg.Store != nil {
		var err error
		if isNew, err = c.cfg.Store.SaveIncoming(ev); err != nil {
			c.log.Error("client: store message", "from", from, "err", err)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeInternal, "could not store a message from %s: %v", from, err), Ref: m.ID})
			return // no receipt: the sender tries again
		}
	}
	c.markSeen(from, m.ID)
	c.sendReceipt(from, m.ID, "")
	if isNew {
		c.events.push(ev)
		if m.File != nil {
			c.fileOffered(from, m.ID, *m.File) // files.go
		}
	}
}

// seenBefore reports an id from peer this run already took (without a
// Store, the only memory of duplicates).
func (c *Client) seenBefore(peer, id string) bool {
	_, ok := c.chat.seen[peer][id]
	return ok
}

func (c *Client) markSeen(peer, id string) {
	seen := c.chat.seen[peer]
	if seen == nil {
		seen = map[string]struct{}{}
		c.chat.seen[peer] = seen
	}
	seen[id] = struct{}{}
	q := append(c.chat.seenQ[peer], id)
	if len(q) > maxSeen {
		delete(seen, q[0])
		q = q[1:]
	}
	c.chat.seenQ[peer] = q
}

// sendReceipt acknowledges message id of peer (refused: why we will not
// take it) on the data channel when open, else through the server (which
// turns it into the sender's sealed_receipt and drops what it stored).
func (c *Client) sendReceipt(peer, id string, refused proto.Code) {
	if c.sendDC(peer, &proto.DCMessage{Type: proto.DCDelivered, ID: id, Code: refused}) {
		return
	}
	c.sendSig(proto.TypeDelivered, peer, &proto.Receipt{ID: id, Refused: refused})
}

// onReceipt finishes a pending message once, at its receipt from its
// recipient; a receipt for anything else is dropped.
func (c *Client) onReceipt(from, id string, refused proto.Code, path string) {
	m := c.chat.pending[id]
	if m == nil || m.To != from {
		return
	}
	c.finish(m, refused)
	if refused != "" {
		c.events.push(ErrorEvent{Err: proto.Errorf(refused, "%s", refusalWords(from, refused)), Ref: id})
		return
	}
	c.events.push(DeliveredEvent{ID: id, To: from, Path: path})
}

// refusalWords says why a recipient refused a message.
func refusalWords(peer string, code proto.Code) string {
	switch code {
	case proto.CodeNotAccepted:
		return "not delivered: " + peer + " does not accept messages from you" // contacts only, or blocked: never says which
	case proto.CodeCannotOpen:
		return "not delivered: " + peer + " could not open it (sealed to a key " + peer + " no longer has)"
	}
	return "not delivered: refused by " + peer + " (" + string(code) + ")"
}

// onDCMessage handles a data-channel message from l's peer.
func (c *Client) onDCMessage(l *link, data []byte) {
	m, err := proto.DecodeDC(data)
	if err != nil {
		c.log.Debug("client: bad data channel message", "peer", l.peer, "err", err)
		return
	}
	switch m.Type {
	case proto.DCChat:
		c.receive(l.peer, proto.Chat{ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.Seq, File: m.File, Display: m.Display}, "direct")
	case proto.DCDelivered:
		c.onReceipt(l.peer, m.ID, m.Code, "direct")
	case proto.DCMute:
		if _, ok := c.calls[l.peer]; ok {
			c.events.push(MuteEvent{With: l.peer, Muted: m.Muted}) // call.go: SetMuted
		}
	case proto.DCRead, proto.DCTyping:
		c.onReadOrTyping(l.peer, m.Type == proto.DCRead, m.ID, m.Typing) // receipts.go
	case proto.DCFile:
		c.onFileCtl(l.peer, m.FileControl()) // files.go
	}
}

// onServerChat handles receipts and typing routed through the server.
// Chat text never comes this way (it comes sealed, offline.go).
func (c *Client) onServerChat(env *proto.Envelope) {
	switch env.Type {
	case proto.TypeDelivered:
		if r, err := proto.DecodeBody[*proto.Receipt](env); err == nil {
			c.onReceipt(env.From, r.ID, r.Refused, "server")
		}
	case proto.TypeRead:
		if r, err := proto.DecodeBody[*proto.Receipt](env); err == nil {
			c.onReadOrTyping(env.From, true, r.ID, false) // receipts.go
		}
	case proto.TypeTyping:
		if t, err := proto.DecodeBody[*proto.Typing](env); err == nil {
			c.onReadOrTyping(env.From, false, "", t.Typing)
		}
	}
}
