//go:build !race

package signal_test

const raceDetector = false
