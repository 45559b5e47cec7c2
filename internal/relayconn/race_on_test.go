//go:build race

package relayconn

// raceEnabled: built with -race, where sync.Pool drops items on purpose.
const raceEnabled = true
