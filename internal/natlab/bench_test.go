package natlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"
)

// BenchmarkBringUp builds and tears down a lab with one public host and
// one home of every kind (15 namespaces).
func BenchmarkBringUp(b *testing.B) {
	Require(b)
	var up, down time.Duration
	for b.Loop() {
		start := time.Now()
		lab := New(b, Config{})
		lab.AddPublicHost("s")
		for _, k := range Kinds {
			lab.AddHome(fmt.Sprintf("h%d", int(k)), k)
		}
		mid := time.Now()
		if err := lab.Close(); err != nil {
			b.Fatal(err)
		}
		up += mid.Sub(start)
		down += time.Since(mid)
	}
	b.ReportMetric(float64(up.Milliseconds())/float64(b.N), "ms-up")
	b.ReportMetric(float64(down.Milliseconds())/float64(b.N), "ms-down")
}

// BenchmarkDo measures one Host.Do round (thread lock, two setns).
func BenchmarkDo(b *testing.B) {
	lab := New(b, Config{})
	h := lab.AddPublicHost("s")
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEcho sends voice-sized UDP packets from a home client to an
// echo server with 16 in flight and reports round trips per second and
// the RTT p99, without impairment and through the NFQUEUE delayer.
func BenchmarkEcho(b *testing.B) {
	lab := New(b, Config{})
	srv := lab.AddPublicHost("echo")
	pc, err := srv.ListenPacket("udp4", srv.Addr().String()+":7")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	echo := pc.LocalAddr().(*net.UDPAddr)
	cases := []struct {
		name string
		im   Impairment
	}{
		{"none", Impairment{}},
		// A loss too small to ever fire: every packet crosses the queue
		// and gets an immediate verdict.
		{"nfqueue-passthrough", Impairment{Loss: 1e-12}},
		{"nfqueue-delay1ms", Impairment{Delay: time.Millisecond}},
	}
	for i, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			home := lab.AddHome(fmt.Sprintf("e%d", i), PortRestricted)
			if c.im != (Impairment{}) {
				lab.Impair(home, c.im)
			}
			conn, err := home.Client.DialContext(b.Context(), "udp4", echo.String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			const window = 16
			msg := make([]byte, 160)
			buf := make([]byte, 1500)
			rtts := make([]time.Duration, 0, 1024)
			sent := map[uint32]time.Time{}
			var seq uint32
			lost := 0
			send := func() {
				binary.BigEndian.PutUint32(msg, seq)
				sent[seq] = time.Now()
				seq++
				if _, err := conn.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			start := time.Now()
			for range window {
				send()
			}
			for b.Loop() {
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := conn.Read(buf)
				if err != nil {
					lost++ // a round trip went missing: refill the window
					clear(sent)
					for range window {
						send()
					}
					continue
				}
				if n >= 4 {
					s := binary.BigEndian.Uint32(buf)
					if t0, ok := sent[s]; ok {
						rtts = append(rtts, time.Since(t0))
						delete(sent, s)
					}
				}
				send()
			}
			elapsed := time.Since(start)
			slices.Sort(rtts)
			b.ReportMetric(float64(len(rtts))/elapsed.Seconds(), "rtt/s")
			if len(rtts) > 0 {
				b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-us")
				b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-us")
			}
			b.ReportMetric(float64(lost), "timeouts")
		})
	}
}
