//go:build audiodevice

package device

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// startPeer runs a client on loopback until the test ends.
func startPeer(t *testing.T, url, name string, mod func(*client.Config)) (*client.Client, *testutil.Recorder[client.Event]) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly}
	mod(&cfg)
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ev := testutil.Record(c.Events())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return", name)
		}
	})
	return c, ev
}

// TestCallThroughDevices: alice speaks through her (null) microphone, bob
// hears through his (null) speaker, on a real call over loopback.
func TestCallThroughDevices(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex // guards mic and speaker
	var mic Capture
	var speaker Sink
	alice, aliceEv := startPeer(t, srv.URL, "alice", func(c *client.Config) {
		c.AudioSource = func(string) (audio.Source, error) {
			src, err := OpenCapture(ctx, null)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			mic = src
			mu.Unlock()
			return src, nil
		}
	})
	_, bobEv := startPeer(t, srv.URL, "bob", func(c *client.Config) {
		c.AutoAnswer = true
		c.AudioSink = func(string) (client.AudioSink, error) {
			s, err := OpenPlayback(null)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			speaker = s
			mu.Unlock()
			return s, nil
		}
	})
	devices := func() (Capture, Sink) {
		mu.Lock()
		defer mu.Unlock()
		return mic, speaker
	}
	const wait = 20 * time.Second
	online := func(name string) func(client.Event) bool {
		return func(e client.Event) bool {
			p, ok := e.(client.PresenceEvent)
			return ok && p.Name == name && p.Status == proto.StatusOnline
		}
	}
	call := func(with string, st client.CallState) func(client.Event) bool {
		return func(e client.Event) bool {
			c, ok := e.(client.CallEvent)
			return ok && c.With == with && c.State == st
		}
	}
	aliceEv.Wait(t, wait, "alice sees bob", online("bob"))
	bobEv.Wait(t, wait, "bob sees alice", online("alice"))

	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	aliceEv.Wait(t, wait, "alice connected", call("bob", client.CallConnected))
	bobEv.Wait(t, wait, "bob connected", call("alice", client.CallConnected))
	flowing := func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == "alice" && s.RTPPacketsReceived > 25
	}
	bobEv.Wait(t, wait, "bob receives alice's RTP", flowing)

	// What arrived was alice's microphone, decoded and played by bob's
	// speaker.
	deadline := time.Now().Add(wait)
	for {
		m, s := devices()
		if m != nil && s != nil && m.Stats().Encoded >= 25 && s.Stats().Decoded >= 25 && s.Stats().Played > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("devices never carried the call: mic %+v, speaker %+v", statsOf(m), playStatsOf(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, s := devices()
	if ps := s.Stats(); ps.Errors != 0 || ps.Buffered > ps.Capacity {
		t.Fatalf("speaker %+v", ps)
	}

	// Hanging up closes bob's speaker (the client closes its sink).
	if err := alice.Hangup(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bobEv.Wait(t, wait, "bob ended", call("alice", client.CallEnded))
	if err := s.WriteRTP(rtpPacket(1, []byte{0xf8, 0xff, 0xfe})); err != ErrClosed {
		t.Fatalf("speaker after hang-up: WriteRTP = %v, want ErrClosed", err)
	}
	t.Logf("mic %+v", m.Stats())
	t.Logf("speaker %+v", s.Stats())
	// The client does not close sources; the capture's context does.
	cancel()
	waitFor(t, 5*time.Second, "mic released", func() bool {
		_, _, err := m.Next()
		return err == ErrClosed
	})
}

func statsOf(c Capture) CaptureStats {
	if c == nil {
		return CaptureStats{}
	}
	return c.Stats()
}

func playStatsOf(s Sink) PlaybackStats {
	if s == nil {
		return PlaybackStats{}
	}
	return s.Stats()
}
