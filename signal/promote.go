package signal

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/stun/v4"
	"github.com/quic-go/quic-go"
)

// probeResult is what a probe found: figures, or the reason it failed.
type probeResult struct {
	mbps, rttMs float64
	err         string // human-readable; empty when every check passed
}

// startProbe checks n in the background (the manager's goroutine group).
func (m *snManager) startProbe(n *snode, gen int, recheck bool) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	reg, key, id := n.reg, n.key, n.id
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		// One node probes a candidate at a time, cluster-wide: the
		// probe's lease is a key in the leases bucket (nodes.go).
		l := m.s.tryLease("probe." + nkey(id))
		if l == nil {
			m.probeDone(n, gen, recheck, probeResult{err: "being checked from another signaling node right now; register again shortly"})
			return
		}
		defer l.release()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			renew := time.NewTicker(leaseTTL / 3)
			defer renew.Stop()
			for {
				select {
				case <-m.stop:
					cancel()
					return
				case <-ctx.Done():
					return
				case <-renew.C:
					l.renew()
				}
			}
		}()
		res := m.probe(ctx, &reg, key)
		if ctx.Err() != nil {
			return
		}
		m.probeDone(n, gen, recheck, res)
	}()
}

// probe verifies a candidate the way a stranger would reach it:
//
//  1. QUIC to the advertised address from a fresh socket (ProbeFrom, a
//     port the candidate has never seen): a NAT without a mapping for the
//     port drops this unsolicited packet, so only an open port answers.
//     The certificate must match the registered fingerprint.
//  2. Identity: the endpoint signs the probe's nonce and the fingerprint
//     with the key the candidate signed in with.
//  3. Bandwidth: it sends ProbeBytes on the stream; the rate is measured
//     here, never taken from the candidate's word.
//  4. TURN: a STUN Binding (RFC 5389 section 7) to the UDP listener from
//     another fresh socket, and over TCP and TLS to those listeners.
func (m *snManager) probe(ctx context.Context, r *proto.SupernodeRegister, key ed25519.PublicKey) probeResult {
	to := m.cfg.ProbeTimeout
	from := m.probeFrom()
	qaddr, _ := proto.ParseRelayAddr(r.QUIC)

	pc, err := m.cfg.ListenPacket("udp", from)
	if err != nil {
		return probeResult{err: fmt.Sprintf("probe failed on our side: no probe socket: %v", err)}
	}
	defer pc.Close()
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	dctx, cancel := context.WithTimeout(ctx, to)
	conn, err := tr.Dial(dctx, net.UDPAddrFromAddrPort(qaddr), proto.PinnedTLSConfig(r.Fingerprint, proto.RelayALPN), &quic.Config{HandshakeIdleTimeout: to})
	cancel()
	if err != nil {
		var pe *proto.Error
		if errors.As(err, &pe) {
			return probeResult{err: fmt.Sprintf("identity: the QUIC listener at %s presented another certificate than the registered one", r.QUIC)}
		}
		return probeResult{err: fmt.Sprintf("unreachable: no QUIC answer at %s to an unsolicited probe from %s within %s — a NAT or firewall without a port mapping drops it; forward UDP port %d to this machine or run the supernode where that port is public",
			r.QUIC, localIP(pc), to, qaddr.Port())}
	}
	defer conn.CloseWithError(0, "probe done")
	rtt := conn.ConnectionStats().SmoothedRTT

	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return probeResult{err: fmt.Sprintf("unreachable: QUIC stream to %s: %v", r.QUIC, err)}
	}
	st.SetDeadline(time.Now().Add(to))
	nonceB := make([]byte, 32)
	rand.Read(nonceB)
	nonce := base64.StdEncoding.EncodeToString(nonceB)
	if err := proto.WriteRelayFrame(st, &proto.RelayHello{Op: proto.RelayOpProbe, Nonce: nonce, Bytes: m.cfg.ProbeBytes}); err != nil {
		return probeResult{err: fmt.Sprintf("unreachable: probe to %s: %v", r.QUIC, err)}
	}
	var reply proto.RelayReply
	if err := proto.ReadRelayFrame(st, &reply); err != nil {
		return probeResult{err: fmt.Sprintf("identity: no probe answer from %s: %v", r.QUIC, err)}
	}
	sig, _ := base64.StdEncoding.DecodeString(reply.Signature)
	if !reply.OK || !ed25519.Verify(key, proto.ProbePayload(nonce, r.Fingerprint), sig) {
		return probeResult{err: fmt.Sprintf("identity: the endpoint at %s did not prove it holds this candidate's key", r.QUIC)}
	}
	start := time.Now()
	n, err := io.Copy(io.Discard, io.LimitReader(st, int64(m.cfg.ProbeBytes)+1))
	elapsed := time.Since(start)
	st.CancelRead(0)
	st.Close()
	if err != nil || n != int64(m.cfg.ProbeBytes) {
		return probeResult{err: fmt.Sprintf("bandwidth: test transfer from %s cut short after %d of %d bytes in %s (%v)", r.QUIC, n, m.cfg.ProbeBytes, elapsed.Round(time.Millisecond), err)}
	}
	// Count the first byte's trip too: a tiny transfer on a fast link
	// must not claim infinite bandwidth.
	secs := (elapsed + rtt/2).Seconds()
	mbps := float64(n) * 8 / secs / 1e6
	if mbps < m.cfg.MinMbps {
		return probeResult{err: fmt.Sprintf("bandwidth: measured %.2f Mbps from %s, below the %.1f Mbps minimum", mbps, r.QUIC, m.cfg.MinMbps)}
	}
	res := probeResult{mbps: mbps, rttMs: float64(rtt) / float64(time.Millisecond)}

	if r.TURNUDP != "" {
		if err := m.stunUDP(ctx, from, r.TURNUDP); err != nil {
			return probeResult{err: fmt.Sprintf("unreachable: TURN UDP %s did not answer a Binding from %s within %s (%v) — forward that UDP port too", r.TURNUDP, from, to, err)}
		}
	}
	if r.TURNTCP != "" {
		if err := m.stunTCP(ctx, r.TURNTCP, ""); err != nil {
			return probeResult{err: fmt.Sprintf("unreachable: TURN TCP %s: %v — forward that TCP port too", r.TURNTCP, err)}
		}
	}
	if r.TURNTLS != "" {
		if err := m.stunTCP(ctx, r.TURNTLS, r.Fingerprint); err != nil {
			return probeResult{err: fmt.Sprintf("unreachable: TURN TLS %s: %v — forward that TCP port too", r.TURNTLS, err)}
		}
	}
	return res
}

func (m *snManager) probeFrom() string {
	if m.cfg.ProbeFrom.IsValid() {
		return netip.AddrPortFrom(m.cfg.ProbeFrom, 0).String()
	}
	return ":0"
}

func localIP(pc net.PacketConn) string {
	ap, err := netip.ParseAddrPort(pc.LocalAddr().String())
	if err != nil {
		return pc.LocalAddr().String()
	}
	return ap.String()
}

// stunUDP sends Binding requests from a fresh socket until one is
// answered (RFC 5389 section 7.2.1 retransmission, shortened).
func (m *snManager) stunUDP(ctx context.Context, from, addr string) error {
	ap, err := proto.ParseRelayAddr(addr)
	if err != nil {
		return err
	}
	pc, err := m.cfg.ListenPacket("udp", from)
	if err != nil {
		return err
	}
	defer pc.Close()
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(m.cfg.ProbeTimeout)
	buf := make([]byte, 1500)
	for rto := 100 * time.Millisecond; time.Now().Before(deadline) && ctx.Err() == nil; rto *= 2 {
		if _, err := pc.WriteTo(req.Raw, net.UDPAddrFromAddrPort(ap)); err != nil {
			return err
		}
		pc.SetReadDeadline(minTime(time.Now().Add(rto), deadline))
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				break // timeout: retransmit
			}
			if isBindingSuccess(buf[:n], req.TransactionID) {
				return nil
			}
		}
	}
	return errors.New("no answer")
}

// stunTCP sends one Binding over TCP (or TLS pinned to fp) and reads the
// answer: STUN over a stream needs no extra framing (RFC 5389 section 7.2.2).
func (m *snManager) stunTCP(ctx context.Context, addr, fp string) error {
	dctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
	defer cancel()
	c, err := m.cfg.Dial(dctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("no connection: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(m.cfg.ProbeTimeout))
	if fp != "" {
		tc := tls.Client(c, proto.PinnedTLSConfig(fp))
		if err := tc.HandshakeContext(dctx); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		c = tc
	}
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return err
	}
	if _, err := c.Write(req.Raw); err != nil {
		return err
	}
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return fmt.Errorf("no Binding answer: %w", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if n > 1500 {
		return errors.New("oversized answer")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		return fmt.Errorf("short Binding answer: %w", err)
	}
	if !isBindingSuccess(append(hdr, body...), req.TransactionID) {
		return errors.New("answer is not a Binding success")
	}
	return nil
}

func isBindingSuccess(b []byte, id [stun.TransactionIDSize]byte) bool {
	if !stun.IsMessage(b) {
		return false
	}
	var msg stun.Message
	msg.Raw = append([]byte(nil), b...)
	if err := msg.Decode(); err != nil {
		return false
	}
	return msg.Type == stun.BindingSuccess && msg.TransactionID == id
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
