package signal

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// WriteOfflineAsOtherNode writes name's record offline as another node
// does when it takes the node holding name's session for dead.
func (s *Server) WriteOfflineAsOtherNode(name string) error {
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
		r.Status, r.Node, r.Session, r.Since, r.NAT = "", "", "", 0, ""
		r.Seen, r.W = time.Now().UnixMilli(), "another-node"
		v, _ := json.Marshal(&r)
		_, err = s.st.users.Update(ctx, nkey(name), v, rev)
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	}
}
