package client

import (
	"context"
	"sort"
	"time"

	"github.com/parley-voice/parley/proto"
)

// Contacts-scoped presence (proto/contacts.go). The server tells a client
// only about the people it asks for: after each sign-in the client sends
// the server its contacts — Config.Contacts, the names added with
// AddContacts, and the people it recently talked to — and follows a
// watched page of people online from the server's directory
// (Config.OnlineDirectory), which on a small server holds everyone
// online. Someone the client messages or calls, or who messages or calls
// it, is heard about too (the server sends their presence first).
//
// After a reconnect, people shown online before who are not confirmed by
// the answers are shown offline, once every answer is in.

// maxTalkedPeers is how many recent peers are re-watched after a reconnect.
const maxTalkedPeers = 64

type contactState struct {
	names      map[string]bool     // explicit contacts
	asked      map[string][]func() // peers asked about this session: what waits for the answer (nil once in)
	talked     []string            // recent peers, oldest first
	pending    int                 // answers awaited after a sign-in
	stale      map[string]bool     // shown online before the reconnect, not confirmed yet
	dirRef     string              // id of our own watched directory query
	dirWaiters map[string]func(*proto.DirectoryPage)
}

func newContactState(initial []string) contactState {
	cs := contactState{names: map[string]bool{}, dirWaiters: map[string]func(*proto.DirectoryPage){}}
	for _, n := range initial {
		if proto.ValidateName(n) == nil {
			cs.names[n] = true
		}
	}
	return cs
}

// noteTalked remembers peer as someone we talk to (loop goroutine).
func (c *Client) noteTalked(peer string) {
	cs := &c.contacts
	if cs.names[peer] || peer == c.cfg.Name {
		return
	}
	for i, n := range cs.talked {
		if n == peer {
			cs.talked = append(append(cs.talked[:i:i], cs.talked[i+1:]...), peer)
			return
		}
	}
	cs.talked = append(cs.talked, peer)
	if len(cs.talked) > maxTalkedPeers {
		cs.talked = cs.talked[1:]
	}
}

// watchList is every name the client asks the server about.
func (c *Client) watchList(max int) []string {
	cs := &c.contacts
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if !seen[n] && n != c.cfg.Name && (max <= 0 || len(out) < max) {
			seen[n] = true
			out = append(out, n)
		}
	}
	names := make([]string, 0, len(cs.names))
	for n := range cs.names {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		add(n)
	}
	for i := len(cs.talked) - 1; i >= 0; i-- {
		add(cs.talked[i])
	}
	for _, m := range c.chat.pending {
		add(m.To)
	}
	for peer := range c.links {
		add(peer)
	}
	return out
}

// askPresence asks the server, once per session, about a peer we have no
// presence for (someone we are about to message): then runs when the
// answer is in (with the peer's presence, if the name is registered). It
// reports false when there is nothing to wait for (loop goroutine).
func (c *Client) askPresence(peer string, then func()) bool {
	cs := &c.contacts
	if cs.asked == nil {
		cs.asked = map[string][]func(){}
	}
	waiting, asked := cs.asked[peer]
	switch {
	case asked && waiting == nil:
		return false // answered: the name is not registered
	case asked:
		cs.asked[peer] = append(waiting, then)
		return true
	}
	c.noteTalked(peer)
	err := c.sendSigID(proto.TypeContacts, randomID(), "", &proto.Contacts{Add: []string{peer}}, func(error) {
		fs := cs.asked[peer]
		cs.asked[peer] = nil
		for _, f := range fs {
			f()
		}
	})
	if err != nil {
		return false
	}
	cs.asked[peer] = []func(){then}
	return true
}

// contactsOnSignIn sends the contacts and the directory watch after a
// welcome (loop goroutine).
func (c *Client) contactsOnSignIn(w *proto.Welcome) {
	cs := &c.contacts
	cs.pending = 0
	cs.asked = nil
	cs.stale = map[string]bool{}
	for n, p := range c.presence {
		if p.Online() {
			cs.stale[n] = true
		}
	}
	for _, p := range w.Online { // a server from before contacts lists everyone here
		delete(cs.stale, p.Name)
	}
	list := c.watchList(w.MaxContacts)
	for i := 0; i < len(list); i += proto.MaxContactsPerFrame {
		chunk := list[i:min(i+proto.MaxContactsPerFrame, len(list))]
		if c.sendSigID(proto.TypeContacts, randomID(), "", &proto.Contacts{Replace: i == 0, Add: chunk}, c.syncAnswered) == nil {
			cs.pending++
		}
	}
	if w.Directory && c.cfg.OnlineDirectory >= 0 {
		cs.dirRef = randomID()
		q := &proto.DirectoryQuery{Online: true, Watch: true, Limit: c.cfg.OnlineDirectory}
		if c.sendSigID(proto.TypeDirectory, cs.dirRef, "", q, func(error) { c.syncAnswered(nil) }) == nil {
			cs.pending++
		}
	}
	c.expireStale()
}

// syncAnswered counts an answer to the sign-in's requests.
func (c *Client) syncAnswered(error) {
	if c.contacts.pending > 0 {
		c.contacts.pending--
	}
	c.expireStale()
}

// expireStale shows offline whoever was online before a reconnect and was
// not confirmed, once every answer is in.
func (c *Client) expireStale() {
	cs := &c.contacts
	if cs.pending > 0 || len(cs.stale) == 0 {
		return
	}
	names := make([]string, 0, len(cs.stale))
	for n := range cs.stale {
		names = append(names, n)
	}
	cs.stale = nil
	sort.Strings(names)
	for _, n := range names {
		p, ok := c.presence[n]
		if !ok || !p.Online() {
			continue
		}
		if c.linkUp(n) {
			// Unconfirmed right after our own reconnect: after a server
			// restart the peer may simply not be back yet. A peer whose
			// link still works is "unknown", not offline: its presence
			// (or its link failing) decides (signaling.go, linkGone).
			c.unconfirmed[n] = true
			continue
		}
		c.setPresence(proto.Presence{Name: n, Status: proto.StatusOffline, PublicKey: p.PublicKey, LastSeen: time.Now().UnixMilli()})
	}
}

// onPresenceList and onDirectoryPage take the server's answers (loop
// goroutine).
func (c *Client) onPresenceList(env *proto.Envelope) {
	l, err := proto.DecodeBody[*proto.PresenceList](env)
	if err != nil {
		return
	}
	for _, p := range l.Entries {
		c.setPresence(p)
	}
}

func (c *Client) onDirectoryPage(env *proto.Envelope) {
	p, err := proto.DecodeBody[*proto.DirectoryPage](env)
	if err != nil {
		return
	}
	cs := &c.contacts
	if p.Ref != "" && p.Ref == cs.dirRef {
		delete(c.waiters, p.Ref)
		for _, e := range p.Entries {
			c.setPresence(e)
		}
		c.syncAnswered(nil)
		return
	}
	if f := cs.dirWaiters[p.Ref]; p.Ref != "" && f != nil {
		delete(cs.dirWaiters, p.Ref)
		delete(c.waiters, p.Ref)
		f(p)
	}
}

// AddContacts adds names to the contacts: the server sends their presence
// (before this returns, when signed in) and every change of it. Contacts
// are sent again after each sign-in.
func (c *Client) AddContacts(ctx context.Context, names ...string) error {
	return c.changeContacts(ctx, names, contactAdd)
}

// RemoveContacts stops hearing about names (unless talking with them).
func (c *Client) RemoveContacts(ctx context.Context, names ...string) error {
	return c.changeContacts(ctx, names, contactRemove)
}

type contactChange int

const (
	contactAdd    contactChange = iota
	contactRemove               // no longer a contact
	contactPeer                 // someone we are about to talk to
)

func (c *Client) changeContacts(ctx context.Context, names []string, how contactChange) error {
	for _, n := range names {
		if err := proto.ValidateName(n); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	err := c.do(ctx, func() error {
		for _, n := range names {
			switch {
			case how == contactRemove:
				delete(c.contacts.names, n)
			case n == c.cfg.Name:
			case how == contactAdd:
				c.contacts.names[n] = true
			default:
				c.noteTalked(n)
			}
		}
		if c.sig == nil {
			errc <- nil // sent at the next sign-in
			return nil
		}
		body := &proto.Contacts{Add: names}
		if how == contactRemove {
			body = &proto.Contacts{Remove: names}
		}
		return c.sendSigID(proto.TypeContacts, randomID(), "", body, func(err error) { errc <- err })
	})
	if err != nil {
		return err
	}
	return c.await(ctx, errc) // the server's answer
}

// learnPresence makes sure the client has peer's presence before a call:
// a peer it has not heard of is asked about.
func (c *Client) learnPresence(ctx context.Context, peer string) {
	known := false
	c.do(ctx, func() error {
		_, known = c.presence[peer]
		return nil
	})
	if !known {
		c.changeContacts(ctx, []string{peer}, contactPeer)
	}
}

// Directory asks the server for a page of its directory (proto/contacts.go):
// names with a prefix, all or only those online. With q.Watch the
// entries' presence follows, replacing the page of people online the
// client follows by itself.
func (c *Client) Directory(ctx context.Context, q proto.DirectoryQuery) (*proto.DirectoryPage, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	type answer struct {
		p   *proto.DirectoryPage
		err error
	}
	ch := make(chan answer, 1)
	err := c.do(ctx, func() error {
		id := randomID()
		if err := c.sendSigID(proto.TypeDirectory, id, "", &q, func(err error) {
			delete(c.contacts.dirWaiters, id)
			ch <- answer{err: err}
		}); err != nil {
			return err
		}
		c.contacts.dirWaiters[id] = func(p *proto.DirectoryPage) {
			for _, e := range p.Entries {
				if q.Watch {
					c.setPresence(e)
				}
			}
			ch <- answer{p: p}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	select {
	case a := <-ch:
		return a.p, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, ErrClosed
	}
}
