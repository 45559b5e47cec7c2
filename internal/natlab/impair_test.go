package natlab

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// echoServer answers every UDP packet with the same bytes until t ends.
func echoServer(t *testing.T, h *Host) netip.AddrPort {
	t.Helper()
	pc, err := h.ListenPacket("udp4", h.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	serveUDP(t, pc, func(b []byte, from *net.UDPAddr) { _, _ = pc.WriteTo(b, from) })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

type probeResult struct {
	sent     int
	rtts     []time.Duration // sorted
	received int
}

func (r probeResult) quantile(q float64) time.Duration {
	if len(r.rtts) == 0 {
		return -1
	}
	return r.rtts[int(math.Min(float64(len(r.rtts)-1), q*float64(len(r.rtts))))]
}

// probe sends n numbered packets every gap from h to echo and measures
// the round trips of those that come back (bounded by n and time).
func probe(t *testing.T, h *Host, echo netip.AddrPort, n int, gap time.Duration) probeResult {
	t.Helper()
	pc, err := h.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sentAt := make([]time.Time, n)
	got := make([]time.Duration, n)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 64)
		for {
			m, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			now := time.Now()
			if m < 4 {
				continue
			}
			i := int(binary.BigEndian.Uint32(buf))
			if i < n && got[i] == 0 {
				got[i] = now.Sub(sentAt[i])
			}
		}
	}()
	dst := net.UDPAddrFromAddrPort(echo)
	msg := make([]byte, 160) // a voice frame's size
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint32(msg, uint32(i))
		sentAt[i] = time.Now()
		if _, err := pc.WriteTo(msg, dst); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		time.Sleep(gap)
	}
	// Let stragglers arrive, then stop the reader (its writes to got
	// happen-before readDone closes).
	time.Sleep(300 * time.Millisecond)
	_ = pc.SetReadDeadline(time.Now())
	<-readDone
	r := probeResult{sent: n}
	for _, d := range got {
		if d > 0 {
			r.rtts = append(r.rtts, d)
		}
	}
	slices.Sort(r.rtts)
	r.received = len(r.rtts)
	return r
}

// TestImpair checks that delay, jitter and loss applied on a home router
// show up, within loose bounds, in round trips measured through it, for a
// NAT router and for a bridging (None) one, and that removing the
// impairment restores the link.
func TestImpair(t *testing.T) {
	lab := New(t, Config{})
	srv := lab.AddPublicHost("echo")
	echo := echoServer(t, srv)
	im := Impairment{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.2, Seed: 7}
	const n = 200

	for _, kind := range []NATKind{PortRestricted, None} {
		t.Run(kind.String(), func(t *testing.T) {
			home := lab.AddHome("h"+kind.String()[:4], kind)

			base := probe(t, home.Client, echo, 50, 2*time.Millisecond)
			if base.received != base.sent || base.quantile(0.5) > 5*time.Millisecond {
				t.Fatalf("baseline: %d/%d back, median %v", base.received, base.sent, base.quantile(0.5))
			}

			lab.Impair(home, im)
			r := probe(t, home.Client, echo, n, 5*time.Millisecond)
			st := lab.ImpairStats(home)
			frac := float64(r.received) / float64(r.sent)
			t.Logf("impaired: %d/%d back (%.2f, want ~%.2f), rtt min %v p50 %v max %v; router queued %d dropped %d passed %d",
				r.received, r.sent, frac, (1-im.Loss)*(1-im.Loss), r.quantile(0), r.quantile(0.5), r.quantile(1), st.Queued, st.Dropped, st.Passed)
			// Round trip crosses the router twice: 2×(20±5) ms = 30..50 ms
			// plus scheduling slack.
			if lo := 2 * (im.Delay - im.Jitter); r.quantile(0) < lo {
				t.Errorf("min RTT %v below %v: delay not applied", r.quantile(0), lo)
			}
			if med := r.quantile(0.5); med < 35*time.Millisecond || med > 60*time.Millisecond {
				t.Errorf("median RTT %v, want about %v", med, 2*im.Delay)
			}
			if spread := r.quantile(0.9) - r.quantile(0.1); spread < 3*time.Millisecond {
				t.Errorf("RTT p10..p90 spread %v: jitter not applied", spread)
			}
			// (0.8)² = 0.64 expected; ±4 standard deviations for n=200.
			if frac < 0.50 || frac > 0.78 {
				t.Errorf("delivered fraction %.2f, want about 0.64", frac)
			}
			if st.Queued < uint64(r.sent+r.received) || st.Dropped == 0 {
				t.Errorf("router stats %+v inconsistent with %d sent / %d back", st, r.sent, r.received)
			}
			if dr := float64(st.Dropped) / float64(st.Queued); dr < 0.12 || dr > 0.28 {
				t.Errorf("router drop ratio %.2f, want about %.2f", dr, im.Loss)
			}

			lab.Impair(home, Impairment{})
			after := probe(t, home.Client, echo, 50, 2*time.Millisecond)
			if after.received != after.sent || after.quantile(0.5) > 5*time.Millisecond {
				t.Errorf("after removal: %d/%d back, median %v", after.received, after.sent, after.quantile(0.5))
			}
		})
	}
}

func TestImpairmentValidate(t *testing.T) {
	cases := []struct {
		name string
		im   Impairment
		ok   bool
	}{
		{"zero", Impairment{}, true},
		{"typical", Impairment{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.05}, true},
		{"all lost", Impairment{Loss: 1}, true},
		{"negative delay", Impairment{Delay: -time.Millisecond}, false},
		{"negative jitter", Impairment{Jitter: -1}, false},
		{"loss above 1", Impairment{Loss: 1.5}, false},
		{"negative loss", Impairment{Loss: -0.1}, false},
		{"NaN loss", Impairment{Loss: math.NaN()}, false},
		{"absurd delay", Impairment{Delay: 2 * time.Hour}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.im.validate()
			if (err == nil) != c.ok {
				t.Fatalf("validate(%+v) = %v, want ok=%v", c.im, err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrBadImpairment) {
				t.Fatalf("error %v is not ErrBadImpairment", err)
			}
		})
	}
}
