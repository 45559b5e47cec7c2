package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/dcbench"
	"github.com/parley-voice/parley/internal/sockbuf"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/supernode"
	"github.com/pion/webrtc/v4"
)

// runBenchFiles is `parley bench files`: one file sent on loopback by
// Parley (direct, and relayed through a local supernode) and, beside it,
// by the tools people use for the same job (magic-wormhole, croc when
// installed) and by nc, the wire's limit on this machine.
func runBenchFiles(ctx context.Context, args []string) error {
	fs := newFlagSet("bench files", "[flags]", `
Sends one file of --size MiB on loopback and prints the throughput (the
file's size over the time from starting the send to the file whole on disk
at the receiver; for Parley also the rate once bytes flow, without the
sender's SHA-256 pass):

  parley direct      two clients in this process, peer to peer
  parley relayed     the same through a local supernode (both clients
                     refuse direct paths; QUIC datagrams to the relay)
  pion data channel  two bare pion peer connections in this process, one
                     data channel, no file, no hash: the floor under
                     Parley's rows (internal/dcbench)
  magic-wormhole     Debian's magic-wormhole with a local mailbox server and
                     transit relay (apt-get install magic-wormhole
                     python3-magic-wormhole-mailbox-server
                     magic-wormhole-transit-relay)
  croc               if a croc binary is on PATH, with a local croc relay
  nc                 netcat: plain TCP, no encryption, no check: the wire

The anchors run inside a private network namespace holding only lo
(unshare, as root), so no tool can reach beyond this machine's loopback.

"CPU/MB" is the CPU time (user + system, all cores) spent per MB sent:
both ends, and for Parley the signaling server and the supernode too,
which all run in this process; for the anchors every process of the
tool, its start-up included. On a busy machine it says more than the rates: an idle one with N
cores can go at most N×1000/(CPU/MB) MB/s. Like parley chat, the process
collects garbage at GOGC=400 unless GOGC is set (see gc.go).`)
	sizeMiB := fs.Int("size", 256, "file size in MiB")
	dir := fs.String("dir", "", "folder for the files (default: a temporary one, removed after)")
	anchors := fs.Bool("anchors", true, "also time magic-wormhole, croc and nc when installed")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the Parley transfers to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	clientGC()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *sizeMiB < 1 || *sizeMiB > 64<<10 {
		return errors.New("--size must be 1–65536 MiB")
	}
	size := int64(*sizeMiB) << 20
	if *dir == "" {
		d, err := os.MkdirTemp("", "parley-bench-files-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	src := filepath.Join(*dir, "bench.bin")
	if err := writeRandomFile(src, size); err != nil {
		return err
	}
	out := os.Stdout
	fmt.Fprintf(out, "parley bench files: %d MiB on loopback\n\n", *sizeMiB)
	fmt.Fprintf(out, "%-18s %12s %12s %8s  %s\n", "", "end to end", "bytes flow", "CPU/MB", "")
	row := func(name string, total, wire float64, cpu time.Duration, note string) {
		w, c := "–", "–"
		if wire > 0 {
			w = fmt.Sprintf("%.1f MB/s", wire/1e6)
		}
		if cpu > 0 {
			c = fmt.Sprintf("%.1f ms", float64(cpu)/float64(time.Millisecond)/(float64(size)/1e6))
		}
		fmt.Fprintf(out, "%-18s %12s %12s %8s  %s\n", name, fmt.Sprintf("%.1f MB/s", total/1e6), w, c, note)
	}
	fmt.Fprintf(out, "(load average %s on %d cores)\n", loadAverage(), runtime.NumCPU())
	for _, relayed := range []bool{false, true} {
		name := map[bool]string{false: "parley direct", true: "parley relayed"}[relayed]
		r, err := benchParleyFile(ctx, src, filepath.Join(*dir, "in-"+strings.Fields(name)[1]), relayed)
		if err != nil {
			fmt.Fprintf(out, "%-18s failed: %v\n", name, err)
			continue
		}
		row(name, float64(size)/r.total.Seconds(), float64(size)/r.wire.Seconds(), r.cpu, r.note)
	}
	if f, err := benchFloor(ctx, size); err != nil {
		fmt.Fprintf(out, "%-18s failed: %v\n", "pion data channel", err)
	} else {
		row("pion data channel", f.MBps()*1e6, 0, f.CPU, "bare pion pair, 64 KiB messages, 1–2 MiB buffered: the floor")
	}
	if !*anchors {
		return nil
	}
	for _, a := range fileAnchors {
		if why := a.missing(); why != "" {
			fmt.Fprintf(out, "%-18s not run: %s\n", a.name, why)
			continue
		}
		d, cpu, err := runAnchor(ctx, a.script, *dir, src)
		if err != nil {
			fmt.Fprintf(out, "%-18s failed: %v\n", a.name, err)
			continue
		}
		row(a.name, float64(size)/d.Seconds(), 0, cpu, a.note)
	}
	return nil
}

func writeRandomFile(p string, size int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type fileRun struct {
	total, wire time.Duration
	cpu         time.Duration // the process's CPU time over total
	note        string
}

// benchFloor sends size bytes over a bare pion data channel pair whose
// sockets are like a Parley link's.
func benchFloor(ctx context.Context, size int64) (dcbench.Result, error) {
	p, err := dcbench.New(ctx, dcbench.Config{Settings: func(se *webrtc.SettingEngine) {
		se.SetNet(&sockbuf.Net{}) // as Parley's links have
		client.LoopbackOnly(se)
	}})
	if err != nil {
		return dcbench.Result{}, err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	return p.Send(ctx, size)
}

// loadAverage is the first figure of /proc/loadavg ("?" if unknown).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// benchParleyFile sends src from one client to another (relayed through a
// local supernode if relayed) and times it.
func benchParleyFile(ctx context.Context, src, inbox string, relayed bool) (*fileRun, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, url, err := startBenchServer(ctx, signal.SupernodeConfig{
		AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, ProbeBytes: 256 << 10, MinMbps: 1, ProbeTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	policy := webrtc.ICETransportPolicyAll
	if relayed {
		_, key, _ := ed25519.GenerateKey(nil)
		states := make(chan proto.SupernodeState, 16)
		sn, err := supernode.New(supernode.Config{Server: url, Name: "bench-relay", Key: key,
			ListenQUIC: "127.0.0.1:0", ListenTURNUDP: "127.0.0.1:0", ListenTURNTCP: "127.0.0.1:0", ListenTURNTLS: "127.0.0.1:0",
			AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, MaxSessionKbps: 1e8, MaxRelayMbps: 1e5,
			OnDecision: func(d supernode.Decision) {
				select {
				case states <- d.State:
				default:
				}
			}})
		if err != nil {
			return nil, err
		}
		go sn.Run(ctx)
		defer sn.Close()
		if err := waitState(ctx, states, proto.SupernodePromoted); err != nil {
			return nil, err
		}
		policy = webrtc.ICETransportPolicyRelay
	}
	mk := func(name string, files client.FileConfig) (*benchClient, error) {
		return startBenchClient(ctx, client.Config{Server: url, Name: name, ICETransportPolicy: policy, Files: files})
	}
	a, err := mk("bench-sender", client.FileConfig{})
	if err != nil {
		return nil, err
	}
	defer a.stop()
	b, err := mk("bench-receiver", client.FileConfig{Dir: inbox, MaxSize: 1 << 40, AutoAccept: func(string, proto.FileInfo) bool { return true }})
	if err != nil {
		return nil, err
	}
	defer b.stop()
	if _, err := a.waitFor(func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == "bench-receiver" && p.Online()
	}); err != nil {
		return nil, err
	}
	start, cpu0 := time.Now(), dcbench.CPUTime()
	id, err := a.c.SendFile(ctx, "bench-receiver", src)
	if err != nil {
		return nil, err
	}
	var first time.Time
	var path string
	ev, err := b.waitForLong(10*time.Minute, func(e client.Event) bool {
		switch x := e.(type) {
		case client.FileOfferEvent:
			first = time.Now()
		case client.LinkEvent:
			if x.State == "open" && x.Path != "" {
				path = x.Path // the path the link opened on (a small file ends before any progress)
			}
		case client.FileProgressEvent:
			path = x.Path
		case client.FileDoneEvent:
			return x.ID == id
		case client.FileFailedEvent:
			return x.ID == id
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	end, cpu := time.Now(), dcbench.CPUTime()-cpu0
	if f, ok := ev.(client.FileFailedEvent); ok {
		return nil, fmt.Errorf("%s: %s", f.Code, f.Reason)
	}
	d := ev.(client.FileDoneEvent)
	os.Remove(d.File)
	note := fmt.Sprintf("SHA-256 checked; path %s", path)
	return &fileRun{total: end.Sub(start), wire: end.Sub(first), cpu: cpu, note: note}, nil
}

func waitState(ctx context.Context, states <-chan proto.SupernodeState, want proto.SupernodeState) error {
	timeout := time.After(15 * time.Second)
	for {
		select {
		case s := <-states:
			if s == want {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("supernode not %s after 15 s", want)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fileAnchor is another tool sending the same file on loopback.
type fileAnchor struct {
	name, note string
	tools      []string // commands it needs
	script     string   // sh, run in a network namespace with only lo; $SRC is the file, $DIR a scratch folder; prints "elapsed_ns N"
}

func (a fileAnchor) missing() string {
	if os.Geteuid() != 0 {
		return "needs root for a private network namespace (unshare)"
	}
	for _, t := range append([]string{"unshare", "ip", "cmp"}, a.tools...) {
		if _, err := exec.LookPath(t); err != nil {
			return t + " is not installed"
		}
	}
	return ""
}

var fileAnchors = []fileAnchor{
	{
		name:  "magic-wormhole",
		note:  "PAKE + NaCl secretbox; local mailbox and transit relay (Debian magic-wormhole 0.12)",
		tools: []string{"wormhole", "twist3", "nc"},
		script: `
twist3 wormhole-mailbox --port=tcp:4000:interface=127.0.0.1 --channel-db="$DIR/mailbox.sqlite" >"$DIR/mailbox.log" 2>&1 & MB=$!
twist3 transitrelay --port=tcp:4001:interface=127.0.0.1 >"$DIR/transit.log" 2>&1 & TR=$!
trap 'kill $MB $TR 2>/dev/null' EXIT
for i in $(seq 100); do nc -z 127.0.0.1 4000 && nc -z 127.0.0.1 4001 && break; sleep 0.1; done
R="--relay-url ws://127.0.0.1:4000/v1 --transit-helper tcp:127.0.0.1:4001"
start=$(date +%s%N)
wormhole $R send --code 7-parley-bench "$SRC" >"$DIR/send.log" 2>&1 & S=$!
wormhole $R receive --accept-file -o "$DIR/out.bin" 7-parley-bench >"$DIR/recv.log" 2>&1
wait $S
end=$(date +%s%N)
cmp -s "$SRC" "$DIR/out.bin" || { echo "received file differs" >&2; exit 1; }
echo "elapsed_ns $((end-start))"`,
	},
	{
		name:  "croc",
		note:  "PAKE + AES-GCM; local croc relay",
		tools: []string{"croc"},
		script: `
croc relay --host 127.0.0.1 --ports 9009,9010,9011,9012,9013 >"$DIR/relay.log" 2>&1 & RL=$!
trap 'kill $RL 2>/dev/null' EXIT
sleep 1
cd "$DIR"
start=$(date +%s%N)
CROC_SECRET=7-parley-bench-anchor croc --relay 127.0.0.1:9009 --no-local send "$SRC" >"$DIR/send.log" 2>&1 & S=$!
mkdir -p "$DIR/recv" && cd "$DIR/recv"
CROC_SECRET=7-parley-bench-anchor croc --relay 127.0.0.1:9009 --yes --overwrite >"$DIR/recv.log" 2>&1
wait $S
end=$(date +%s%N)
cmp -s "$SRC" "$DIR/recv/$(basename "$SRC")" || { echo "received file differs" >&2; exit 1; }
echo "elapsed_ns $((end-start))"`,
	},
	{
		name:  "nc",
		note:  "plain TCP, no encryption, no integrity check: the wire's limit",
		tools: []string{"nc"},
		script: `
nc -l 127.0.0.1 5000 >"$DIR/out.bin" & L=$!
sleep 0.3
start=$(date +%s%N)
nc -N 127.0.0.1 5000 <"$SRC"
wait $L
end=$(date +%s%N)
cmp -s "$SRC" "$DIR/out.bin" || { echo "received file differs" >&2; exit 1; }
echo "elapsed_ns $((end-start))"`,
	},
}

// runAnchor runs script in a new network namespace holding only lo and
// returns the time it printed and the CPU time of all its processes.
func runAnchor(ctx context.Context, script, dir, src string) (time.Duration, time.Duration, error) {
	scratch, err := os.MkdirTemp(dir, "anchor-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(scratch)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "sh", "-ec", "ip link set lo up\n"+script)
	cmd.Env = append(os.Environ(), "SRC="+src, "DIR="+scratch)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(lastLines(string(out), 3)))
	}
	// wait4's usage counts the child and every descendant it waited for:
	// the whole tool, its relays and their start-up.
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "elapsed_ns "); ok {
			ns, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil && ns > 0 {
				return time.Duration(ns), cpu, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no timing in its output: %s", lastLines(string(out), 3))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}
