package main

import (
	"os"
	"runtime/debug"
)

// Garbage collection for a client process. pion allocates for every
// packet of a data channel (SCTP chunks, DTLS records: ~870 packets a
// MB), so a file at full speed keeps the collector busy: at Go's default
// (GOGC=100) it took ~4 ms of CPU per MB of a transfer here, a sixth of
// the whole (parley bench files, CPU/MB 24-25 ms direct -> 21-23 ms at
// 400; the relayed row 57 -> 44-55 ms). A client's live heap is small
// (tens of MB), so it collects at 400 % growth. No memory limit is set:
// a limit also bounds what an embedded nats-server's JetStream may hold
// (it sizes itself from GOMEMLIMIT), and bench files runs one.
const clientGCPercent = 400

// clientGC sets the client's collector unless the user set GOGC. Servers
// keep Go's defaults: their live heap grows with their users.
func clientGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(clientGCPercent)
	}
}
