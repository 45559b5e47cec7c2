package client

import (
	"context"
	"time"

	"github.com/parley-voice/parley/proto"
)

// MarkRead tells peer that we read its messages ids (read receipts). They
// go over the data channel when it is open, else through the server; a
// read receipt for a peer who is offline is dropped.
func (c *Client) MarkRead(ctx context.Context, peer string, ids ...string) error {
	for _, id := range ids {
		if err := proto.ValidateID(id); err != nil {
			return err
		}
	}
	return c.do(ctx, func() error {
		for _, id := range ids {
			if !c.sendDC(peer, &proto.DCMessage{Type: proto.DCRead, ID: id}) {
				if err := c.sendSig(proto.TypeRead, peer, &proto.Receipt{ID: id}); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// SetTyping tells peer whether we are typing to it (best effort).
func (c *Client) SetTyping(ctx context.Context, peer string, typing bool) error {
	return c.do(ctx, func() error {
		if p, ok := c.presence[peer]; !ok || !p.Online() {
			return nil
		}
		if c.sendDC(peer, &proto.DCMessage{Type: proto.DCTyping, Typing: typing}) {
			return nil
		}
		return c.sendSig(proto.TypeTyping, peer, &proto.Typing{Typing: typing})
	})
}

// sendDC sends m on peer's data channel if it is open (loop goroutine).
func (c *Client) sendDC(peer string, m *proto.DCMessage) bool {
	l := c.links[peer]
	if l == nil || !l.dcOpen {
		return false
	}
	b, err := proto.EncodeDC(m)
	return err == nil && l.dc.SendText(string(b)) == nil
}

// typingEvery bounds how often a peer's typing indicator becomes an event:
// a flood of them from one peer must not flood the user's screen.
const typingEvery = time.Second

// onReadOrTyping handles read receipts and typing indicators from either
// path (loop goroutine). A read receipt counts only for a message we sent
// to that peer; typing from someone Config.Accept refuses is dropped, and
// a peer's typing becomes at most one event a second (a stop always goes
// through).
func (c *Client) onReadOrTyping(from string, read bool, id string, typing bool) {
	if read {
		if c.outbox.WasSent(from, id) {
			c.events.push(ReadEvent{ID: id, By: from})
		}
		return
	}
	if c.cfg.Accept != nil && !c.cfg.Accept(from) {
		return
	}
	r := c.recvFor(from)
	now := time.Now()
	if typing && now.Sub(r.typing) < typingEvery {
		return
	}
	r.typing = now
	if !typing {
		r.typing = time.Time{}
	}
	c.events.push(TypingEvent{From: from, Typing: typing})
}
