package relaybench

import (
	"math"
	"sync/atomic"
	"time"
)

// hist is a latency histogram safe for concurrent Add: 1 µs buckets up to
// 2 ms, then buckets 2% wide up to 10 s.
type hist struct {
	b [histBuckets]atomic.Uint64
}

const (
	histLinear  = 2000 // 1 µs each
	histLogBase = 1.02
	histBuckets = histLinear + 440 // 2 ms * 1.02^440 ≈ 12 s
)

func histBucket(d time.Duration) int {
	us := float64(d) / 1e3
	if us < 0 {
		return 0
	}
	if us < histLinear {
		return int(us)
	}
	i := histLinear + int(math.Log(us/histLinear)/math.Log(histLogBase))
	return min(i, histBuckets-1)
}

func histValue(i int) time.Duration {
	if i < histLinear {
		return time.Duration(i)*time.Microsecond + time.Microsecond/2
	}
	return time.Duration(histLinear * math.Pow(histLogBase, float64(i-histLinear)+0.5) * 1e3)
}

func (h *hist) add(d time.Duration) { h.b[histBucket(d)].Add(1) }

// quantiles returns the q-quantiles (0 < q < 1) of what was added.
func (h *hist) quantiles(qs ...float64) []time.Duration {
	var n uint64
	counts := make([]uint64, histBuckets)
	for i := range h.b {
		counts[i] = h.b[i].Load()
		n += counts[i]
	}
	out := make([]time.Duration, len(qs))
	if n == 0 {
		return out
	}
	for k, q := range qs {
		want := uint64(math.Ceil(q * float64(n)))
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= want {
				out[k] = histValue(i)
				break
			}
		}
	}
	return out
}
