package audiogap

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

func TestLongestGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	cases := []struct {
		name    string
		pkts    []RTPArrival
		longest time.Duration
		lost    int
	}{
		{"steady 20 ms", []RTPArrival{{Seq: 1, At: at(0)}, {Seq: 2, At: at(20)}, {Seq: 3, At: at(40)}, {Seq: 4, At: at(60)}}, 20 * time.Millisecond, 0},
		{"a failover: 500 ms silent, 24 lost", []RTPArrival{{Seq: 1, At: at(0)}, {Seq: 2, At: at(20)}, {Seq: 27, At: at(520)}, {Seq: 28, At: at(540)}}, 500 * time.Millisecond, 24},
		{"a late packet fills no silence", []RTPArrival{{Seq: 1, At: at(0)}, {Seq: 3, At: at(40)}, {Seq: 2, At: at(300)}, {Seq: 4, At: at(310)}}, 270 * time.Millisecond, 0},
		{"a duplicate fills no silence", []RTPArrival{{Seq: 1, At: at(0)}, {Seq: 2, At: at(20)}, {Seq: 2, At: at(200)}, {Seq: 3, At: at(400)}}, 380 * time.Millisecond, 0},
		{"sequence numbers wrap", []RTPArrival{{Seq: 65534, At: at(0)}, {Seq: 65535, At: at(20)}, {Seq: 0, At: at(40)}, {Seq: 5, At: at(140)}}, 100 * time.Millisecond, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &Recorder{}
			for _, p := range tc.pkts {
				a.WriteRTP(&rtp.Packet{Header: rtp.Header{SSRC: 7, SequenceNumber: p.Seq}})
			}
			// WriteRTP stamps now; put the test's arrival times in.
			a.mu.Lock()
			copy(a.pkts, tc.pkts)
			a.mu.Unlock()
			g := a.LongestGap(t0.Add(-time.Second), t0.Add(time.Hour))
			if g.Longest != tc.longest || g.Lost != tc.lost || g.Packets != len(tc.pkts) {
				t.Fatalf("%v: longest %s lost %d packets %d, want %s, %d, %d", tc.pkts, g.Longest, g.Lost, g.Packets, tc.longest, tc.lost, len(tc.pkts))
			}
		})
	}
	// Another SSRC (a second stream) is not this stream's audio.
	a := &Recorder{}
	a.WriteRTP(&rtp.Packet{Header: rtp.Header{SSRC: 1, SequenceNumber: 1}})
	a.WriteRTP(&rtp.Packet{Header: rtp.Header{SSRC: 2, SequenceNumber: 9}})
	if a.Count() != 1 {
		t.Fatalf("recorded %d packets of two streams, want the first stream's 1", a.Count())
	}
}
