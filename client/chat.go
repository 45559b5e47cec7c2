package client

import (
	"context"
	"time"

	"github.com/parley-voice/parley/proto"
)

// pendingMsg is a sent message awaiting its delivery receipt.
type pendingMsg struct {
	id, to, text string
	ts           int64
	lastSent     time.Time
	sends        int
	sealed       bool            // left (or being left) with the server for an offline peer
	file         *proto.FileInfo // the offer of a file (files.go)
}

// maxSeen bounds the ids remembered per peer for duplicate suppression.
const maxSeen = 4096

type chatState struct {
	pending map[string]*pendingMsg
	order   []string                       // pending ids in send order
	seen    map[string]map[string]struct{} // peer -> ids received
	seenQ   map[string][]string            // peer -> ids, oldest first
}

func newChatState() chatState {
	return chatState{pending: map[string]*pendingMsg{}, seen: map[string]map[string]struct{}{}, seenQ: map[string][]string{}}
}

// Send sends text to peer and returns the message id. The message goes over
// the data channel when the link is open, else through the server; it is
// sent again through the server until a receipt arrives (DeliveredEvent).
func (c *Client) Send(ctx context.Context, peer, text string) (string, error) {
	id := randomID()
	return id, c.Resend(ctx, peer, id, text, time.Now().UnixMilli())
}

// Resend sends a message under an id chosen before, with its original
// time: a message a previous session handed over but saw no receipt for
// (kept in the caller's history). Receivers drop ids they have seen, so a
// message that did arrive the first time is not shown twice; its receipt
// comes again (DeliveredEvent).
func (c *Client) Resend(ctx context.Context, peer, id, text string, ts int64) error {
	if err := proto.ValidateID(id); err != nil {
		return err
	}
	return c.do(ctx, func() error {
		if peer == c.cfg.Name {
			return ErrSelf
		}
		if err := proto.ValidateName(peer); err != nil {
			return err
		}
		if err := proto.ValidateText(text); err != nil {
			return err
		}
		if _, dup := c.chat.pending[id]; dup {
			return nil // already on its way
		}
		m := &pendingMsg{id: id, to: peer, text: text, ts: ts, file: c.fileOfferFor(id)}
		c.chat.pending[id] = m
		c.chat.order = append(c.chat.order, id)
		c.transmit(m, false)
		if p, ok := c.presence[peer]; ok && p.Online() {
			c.ensureLink(peer) // so later messages can go direct
		}
		return nil
	})
}

// transmit sends m over the data channel if open (and not forced through
// the server), else through the server.
func (c *Client) transmit(m *pendingMsg, viaServer bool) {
	m.lastSent = time.Now()
	m.sends++
	if p, ok := c.presence[m.to]; m.sealed || c.sig != nil && (!ok || !p.Online()) {
		if c.sendSealed(m) == nil || m.sealed {
			return // offline.go; a sealed message waits for reconnect
		}
	}
	if l := c.links[m.to]; !viaServer && l != nil && l.dcOpen {
		b, err := proto.EncodeDC(&proto.DCMessage{Type: proto.DCChat, ID: m.id, Text: m.text, Time: m.ts, File: m.file})
		if err == nil && l.dc.SendText(string(b)) == nil {
			return
		}
	}
	if c.sig == nil {
		return // resent on reconnect
	}
	c.sendSigID(proto.TypeChat, m.id, m.to, &proto.Chat{ID: m.id, Text: m.text, Time: m.ts, File: m.file}, func(err error) {
		if err == nil || c.chat.pending[m.id] != m {
			return
		}
		if proto.CodeOf(err) == proto.CodeOffline {
			serr := c.sendSealed(m)
			if serr == nil {
				return // left with the server, sealed (offline.go)
			}
			c.dropPending(m.id)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeOffline, "%s is offline; message not delivered (%v)", m.to, serr), Ref: m.id})
		}
	})
}

func (c *Client) dropPending(id string) {
	delete(c.chat.pending, id)
	for i, x := range c.chat.order {
		if x == id {
			c.chat.order = append(c.chat.order[:i], c.chat.order[i+1:]...)
			break
		}
	}
}

// chatFlush sends pending messages for peer over its newly opened data channel.
func (c *Client) chatFlush(peer string) {
	for _, id := range c.chat.order {
		if m := c.chat.pending[id]; m != nil && m.to == peer {
			c.transmit(m, false)
		}
	}
}

// chatTick resends messages whose receipt is overdue, through the server.
func (c *Client) chatTick(now time.Time) {
	for _, id := range c.chat.order {
		m := c.chat.pending[id]
		if m != nil && now.Sub(m.lastSent) >= c.cfg.DeliveryTimeout {
			c.transmit(m, true)
		}
	}
}

// chatOnReconnect resends everything pending after a signaling reconnect.
func (c *Client) chatOnReconnect() {
	for _, id := range c.chat.order {
		if m := c.chat.pending[id]; m != nil {
			c.transmit(m, true)
		}
	}
}

// deliver emits a received message once per (peer, id), after storing it
// in Config.Store. It reports whether the receipt may be sent.
func (c *Client) deliver(from, id, text string, ts int64, path string, file *proto.FileInfo) bool {
	seen := c.chat.seen[from]
	if seen == nil {
		seen = map[string]struct{}{}
		c.chat.seen[from] = seen
	}
	if _, dup := seen[id]; dup {
		return true
	}
	ev := MessageEvent{From: from, ID: id, Text: text, Time: ts, Path: path, File: file}
	isNew := true
	if c.cfg.Store != nil {
		var err error
		if isNew, err = c.cfg.Store.SaveIncoming(ev); err != nil {
			c.log.Error("client: store message", "from", from, "err", err)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeInternal, "could not store a message from %s: %v", from, err), Ref: id})
			return false
		}
	}
	seen[id] = struct{}{}
	q := append(c.chat.seenQ[from], id)
	if len(q) > maxSeen {
		delete(seen, q[0])
		q = q[1:]
	}
	c.chat.seenQ[from] = q
	if isNew {
		c.events.push(ev)
	}
	if file != nil {
		c.fileOffered(from, id, *file) // files.go
	}
	return true
}

// onReceipt completes a pending message once.
func (c *Client) onReceipt(from, id, path string) {
	m := c.chat.pending[id]
	if m == nil || m.to != from {
		return
	}
	c.dropPending(id)
	c.events.push(DeliveredEvent{ID: id, To: from, Path: path})
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
		if !c.deliver(l.peer, m.ID, m.Text, m.Time, "direct", m.File) {
			return
		}
		if b, err := proto.EncodeDC(&proto.DCMessage{Type: proto.DCDelivered, ID: m.ID}); err == nil {
			if l.dc.SendText(string(b)) != nil {
				c.sendSig(proto.TypeDelivered, l.peer, &proto.Receipt{ID: m.ID})
			}
		}
	case proto.DCDelivered:
		c.onReceipt(l.peer, m.ID, "direct")
	case proto.DCRead, proto.DCTyping:
		c.onReadOrTyping(l.peer, m.Type == proto.DCRead, m.ID, m.Typing) // receipts.go
	case proto.DCFile:
		c.onFileCtl(l.peer, m.FileControl()) // files.go
	}
}

// onServerChat handles chat, receipts and typing routed through the server.
func (c *Client) onServerChat(env *proto.Envelope) {
	switch env.Type {
	case proto.TypeChat:
		m, err := proto.DecodeBody[*proto.Chat](env)
		if err != nil {
			return
		}
		if c.deliver(env.From, m.ID, m.Text, m.Time, "server", m.File) {
			c.sendSig(proto.TypeDelivered, env.From, &proto.Receipt{ID: m.ID})
		}
	case proto.TypeDelivered:
		r, err := proto.DecodeBody[*proto.Receipt](env)
		if err == nil {
			c.onReceipt(env.From, r.ID, "server")
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
