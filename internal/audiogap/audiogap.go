// Package audiogap measures what a listener hears of a call: it records
// the RTP sequence number and arrival time of every packet a call's audio
// sink receives and reports the longest silence. Failover tests assert on
// it and `parley bench failover` reports it.
package audiogap

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// Recorder is a call's audio sink (it has client.AudioSink's methods)
// that records the RTP sequence number and arrival time of every packet.
type Recorder struct {
	mu   sync.Mutex // guards pkts and ssrc
	ssrc uint32
	pkts []RTPArrival
}

// RTPArrival is one received packet.
type RTPArrival struct {
	Seq uint16
	TS  uint32 // RTP timestamp (48 kHz for Opus)
	At  time.Time
}

// WriteRTP records p (the first stream's SSRC only).
func (a *Recorder) WriteRTP(p *rtp.Packet) error {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pkts) == 0 {
		a.ssrc = p.SSRC
	}
	if p.SSRC == a.ssrc {
		a.pkts = append(a.pkts, RTPArrival{p.SequenceNumber, p.Timestamp, now})
	}
	return nil
}

// Close implements the sink; recording stays readable.
func (a *Recorder) Close() error { return nil }

// Count is how many packets arrived.
func (a *Recorder) Count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pkts)
}

// Gap is the longest silence in a window of a recording.
type Gap struct {
	Longest  time.Duration // the longest time between two arrivals of new audio
	From, To time.Time     // when it began and ended
	Lost     int           // sequence numbers never received in the window
	Packets  int           // packets received in the window
}

func (g Gap) String() string {
	return fmt.Sprintf("longest gap %s (%d packets, %d lost)", g.Longest.Round(time.Millisecond), g.Packets, g.Lost)
}

// window returns the packets that arrived in [from, to], in arrival order.
func (a *Recorder) window(from, to time.Time) []RTPArrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []RTPArrival
	for _, p := range a.pkts {
		if !p.At.Before(from) && !p.At.After(to) {
			out = append(out, p)
		}
	}
	return out
}

// Quality is what a listener with a jitterBuffer-deep buffer gets from the
// packets that arrived in [from, to]: each packet's lateness against the
// stream's own clock (RTP timestamps at 48 kHz, anchored at the earliest
// packet, the smallest offset taken as the path delay), its p50 and p99,
// and the share of the packets sent in that span that were lost or later
// than the buffer. n is how many were sent (by sequence number).
func (a *Recorder) Quality(from, to time.Time, jitterBuffer time.Duration) (p50, p99 time.Duration, unusable float64, n int) {
	pk := a.window(from, to)
	if len(pk) < 10 {
		return 0, 0, 100, len(pk)
	}
	off := make([]time.Duration, len(pk))
	minOff := time.Duration(1<<62 - 1)
	for i, p := range pk {
		media := time.Duration(int64(p.TS-pk[0].TS)) * time.Second / 48000
		off[i] = p.At.Sub(pk[0].At) - media
		minOff = min(minOff, off[i])
	}
	late := make([]time.Duration, len(pk))
	bad := 0
	seen := map[uint16]bool{}
	lo, hi := pk[0].Seq, pk[0].Seq
	for i := range pk {
		late[i] = off[i] - minOff
		if late[i] > jitterBuffer {
			bad++
		}
		seen[pk[i].Seq] = true
		if int16(pk[i].Seq-lo) < 0 {
			lo = pk[i].Seq
		}
		if int16(pk[i].Seq-hi) > 0 {
			hi = pk[i].Seq
		}
	}
	sent := int(uint16(hi-lo)) + 1
	bad += sent - len(seen)
	slices.Sort(late)
	return late[len(late)/2], late[len(late)*99/100], float64(bad) / float64(sent) * 100, sent
}

// LongestGap walks the packets that arrived in [from, to] in arrival
// order and measures the longest time between two packets that each
// brought audio newer than any before them (a late duplicate or a
// reordered old packet fills no silence). Sequence numbers wrap (RFC 3550
// section 5.1).
func (a *Recorder) LongestGap(from, to time.Time) Gap {
	pk := a.window(from, to)
	var g Gap
	var last time.Time
	var lo, hi uint16
	seen := map[uint16]bool{}
	for _, p := range pk {
		g.Packets++
		seen[p.Seq] = true
		if last.IsZero() {
			last, lo, hi = p.At, p.Seq, p.Seq
			continue
		}
		if int16(p.Seq-lo) < 0 {
			lo = p.Seq
		}
		if int16(p.Seq-hi) <= 0 {
			continue // not newer than what was heard
		}
		if d := p.At.Sub(last); d > g.Longest {
			g.Longest, g.From, g.To = d, last, p.At
		}
		last, hi = p.At, p.Seq
	}
	if g.Packets > 0 {
		g.Lost = int(uint16(hi-lo)) + 1 - len(seen)
	}
	return g
}
