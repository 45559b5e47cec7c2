package web_test

import (
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
)

// BenchmarkBrowserCall measures a cold browser-to-browser call on loopback
// (no link yet: ICE and DTLS are part of it): Call pressed -> the callee's
// page rings; Answer pressed -> connected on the caller's page, and -> the
// first audio packet received by the caller. Both pages open the (fake)
// microphone on their button press, as people do, so that time is included.
// Times are read from the pages' own clocks (Date.now, shared wall clock).
func BenchmarkBrowserCall(b *testing.B) {
	srv := startServer(b)
	alice := openPage(b, srv.HTTP+"/", "alice")
	bob := openPage(b, srv.HTTP+"/", "bob")
	alice.join("alice")
	bob.join("bob")
	alice.waitFor("bob listed", visible("contact-bob"))
	const probe = `(() => {
		window.bench = {};
		parley.calls.addEventListener("change", () => {
			const k = parley.calls.call;
			if (k?.state === "ringing" && !k.outgoing && !bench.ringing) bench.ringing = Date.now();
			if (k?.state === "connected" && !bench.connected) bench.connected = Date.now();
		});
		setInterval(async () => {
			if (bench.audio || parley.calls.call?.state !== "connected") return;
			const s = await parley.sampleStats();
			if (s && s.packetsReceived > 0) bench.audio = Date.now();
		}, 5);
	})()`
	eval[chromedp.Void](alice, probe)
	eval[chromedp.Void](bob, probe)
	var ring, connect, audio []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Cold: both sides drop their link first.
		eval[chromedp.Void](alice, `parley.links.closeAll("bench", true); window.bench = {}`)
		eval[chromedp.Void](bob, `parley.links.closeAll("bench", true); window.bench = {}`)
		start := eval[float64](alice, `Date.now()`)
		eval[chromedp.Void](alice, `parley.calls.place("bob")`)
		bob.waitFor("ringing", `window.bench.ringing > 0`)
		answered := eval[float64](bob, `Date.now()`)
		eval[chromedp.Void](bob, `parley.calls.answer()`)
		alice.waitFor("audio", `window.bench.audio > 0`)
		r := eval[[]float64](alice, `[window.bench.connected, window.bench.audio]`)
		rang := eval[float64](bob, `window.bench.ringing`)
		ring = append(ring, rang-start)
		connect = append(connect, r[0]-answered)
		audio = append(audio, r[1]-answered)
		eval[chromedp.Void](alice, `parley.calls.hangup()`)
		bob.waitFor("ended", `parley.calls.call === null`)
	}
	b.StopTimer()
	b.ReportMetric(median(ring), "ms-call-to-ringing")
	b.ReportMetric(median(connect), "ms-answer-to-connected")
	b.ReportMetric(median(audio), "ms-answer-to-audio")
}

// BenchmarkPageSignIn measures a page load that signs in by itself (a
// reload with a stored name and key): navigation start -> welcome.
func BenchmarkPageSignIn(b *testing.B) {
	srv := startServer(b)
	p := openPage(b, srv.HTTP+"/", "carol")
	p.join("carol")
	var ms []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.do("reload", chromedp.Reload())
		p.waitFor("online", `performance.getEntriesByName("parley:online").length > 0`)
		ms = append(ms, eval[float64](p, `performance.getEntriesByName("parley:online")[0].startTime`))
	}
	b.StopTimer()
	b.ReportMetric(median(ms), "ms-load-to-online")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
