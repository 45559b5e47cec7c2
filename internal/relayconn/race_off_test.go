//go:build !race

package relayconn

const raceEnabled = false
