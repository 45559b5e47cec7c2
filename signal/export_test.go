package signal

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-voice/parley/proto"
)

// Kill stops the server as a crash would: NATS first (nothing more is
// written, no goodbye), then every connection cut.
func (s *Server) Kill() { s.kill() }

// LagReplica makes this node's view of name lag as a replica's can in a
// cluster: the watch holds the next change of name, and reads of name
// from the bucket find nothing (a KV get answered by a replica that has
// not applied a create yet), until release is called (at the latest when
// the test ends). misses counts the reads that found nothing.
func (s *Server) LagReplica(t testing.TB, name string) (misses func() int, release func()) {
	held := make(chan struct{})
	var n atomic.Int32
	s.users.hooks.Store(&userHooks{
		apply: func(nm string) {
			if nm == name {
				<-held
			}
		},
		fetch: func(nm string) bool {
			select {
			case <-held:
				return true
			default:
			}
			if nm != name {
				return true
			}
			n.Add(1)
			return false
		},
	})
	release = sync.OnceFunc(func() { close(held) })
	t.Cleanup(release)
	return func() int { return int(n.Load()) }, release
}

// StoredPresence is what the users bucket says of name: what the other
// nodes of a cluster show.
func (s *Server) StoredPresence(name string) (proto.Presence, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, _, ok, err := s.users.fetch(ctx, name)
	if err != nil || !ok {
		return proto.Presence{}, false, err
	}
	return s.presenceOf(name, &r), true, nil
}

// WriteRecordAs writes name's record as the node incarnation inc does:
// st at inc, or offline (as when inc takes the node holding name's
// session for dead).
func (s *Server) WriteRecordAs(name, inc string, st proto.Status) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		r, rev, ok, err := s.users.fetch(ctx, name)
		if err != nil {
			return err
		}
		if !ok {
			return jetstream.ErrKeyNotFound
		}
		r.Status, r.Node, r.Session, r.Since, r.NAT, r.W = st, inc, "s-"+inc, time.Now().UnixMilli(), "", inc
		if st == proto.StatusOffline {
			r.Status, r.Node, r.Session, r.Since, r.Seen = "", "", "", 0, time.Now().UnixMilli()
		}
		v, _ := json.Marshal(&r)
		_, err = s.st.users.Update(ctx, nkey(name), v, rev)
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	}
}

// Beat delivers to this node a heartbeat of the node incarnation inc
// (leaving: its goodbye).
func (s *Server) Beat(inc string, leaving bool) {
	b, _ := json.Marshal(nodeBeatMsg{Inc: inc, Name: "node-" + inc, Leaving: leaving})
	s.nodes.onBeat(&nats.Msg{Subject: subjNode, Data: b})
}

// Silence makes inc's last heartbeat as old as a dead node's and runs the
// check for silent nodes.
func (s *Server) Silence(inc string) {
	s.nodes.mu.Lock()
	s.nodes.seen[inc] -= nodeDeadAfter.Milliseconds()
	s.nodes.mu.Unlock()
	s.nodes.checkDeaths()
}

// NodeAlive reports whether this node takes incarnation inc for alive.
func (s *Server) NodeAlive(inc string) bool { return s.nodes.alive(inc) }

// ReplicaStatus is the status name's record has in this node's replica.
func (s *Server) ReplicaStatus(name string) proto.Status {
	r, _, ok := s.users.get(name)
	if !ok {
		return ""
	}
	return rawStatus(&r)
}
