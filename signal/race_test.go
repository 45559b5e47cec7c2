//go:build race

package signal_test

// raceDetector: the race detector slows this package's tests ~15x, so the
// largest scale tests use fewer users under it; `make unit` also runs them
// at full size without it.
const raceDetector = true
