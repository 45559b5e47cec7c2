package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// NATDiscovery configures the client's own NAT discovery (Config.DiscoverNAT).
// After signing in, the client runs the RFC 5780 behaviour-discovery tests
// (nat.Probe) against a STUN server from its own UDP socket and sends the
// result to the signaling server as a TypeNATReport message; the server
// keeps it for the session (signal.Server.NATReport).
type NATDiscovery struct {
	// Server is the STUN server: "host:port" or a stun: URI (RFC 7064).
	// Empty means the first stun: URL among the ICE servers the server
	// handed out in its welcome, then among Config.ICEServers.
	Server string
	// Listener opens the probe socket. Nil means real sockets
	// (nat.SystemListener). When pion runs on another network
	// (SettingEngine.SetNet: a namespace, pion's vnet), pass that network's
	// listener, so that the probe crosses the same NAT as the calls do.
	Listener nat.PacketListener
	// RTO, Timeout and MaxTransmits tune each STUN transaction (RFC 5389
	// section 7.2.1). Zero means nat's defaults: 100 ms, 1 s, 7.
	RTO, Timeout time.Duration
	MaxTransmits int
	// MaxAge is how long a report stays fresh: at a sign-in within MaxAge
	// of the last discovery the report is resent instead of probing again.
	// Zero means 5 minutes.
	MaxAge time.Duration
	// PortMapping also asks the home router for a UDP port mapping (UPnP
	// IGD, PCP, NAT-PMP: nat.MapPort) for the probe's port, records the
	// protocol that granted it in the report and releases it at once. Off
	// by default: it talks to the default gateway and multicasts SSDP on
	// the LAN. MapPort is the template (Gateway, UPnP, Dialer, timeouts);
	// its InternalPort is filled in.
	PortMapping bool
	MapPort     nat.MapPortConfig
}

// NATEvent: NAT discovery finished. Report is what was learned (nil when
// discovery itself failed); Err says why discovery failed or why the
// server refused the report. Sent is true once the server has stored it.
type NATEvent struct {
	Report  *proto.NATReport
	Sent    bool
	Err     error
	Elapsed time.Duration
}

func (NATEvent) event() {}

// EventName is the event's public name.
func (NATEvent) EventName() string { return "nat" }

// MarshalJSON gives the time taken in milliseconds and the error in words.
func (e NATEvent) MarshalJSON() ([]byte, error) {
	s := struct {
		Sent      bool             `json:"sent"`
		ElapsedMs int64            `json:"elapsed_ms"`
		Report    *proto.NATReport `json:"report,omitempty"`
		Error     string           `json:"error,omitempty"`
	}{Sent: e.Sent, ElapsedMs: e.Elapsed.Milliseconds(), Report: e.Report}
	if e.Err != nil {
		s.Error = e.Err.Error()
	}
	return json.Marshal(s)
}

// natState is the client's NAT discovery state, owned by the loop
// goroutine (the discovery itself runs on a goroutine it owns).
type natState struct {
	report  *proto.NATReport // last discovered report, nil before the first
	at      time.Time        // when report was discovered
	running bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the discovery goroutine
}

// NATReport returns the NAT report the client last learned (or the one
// given in Config.NATReport when it has not discovered one), nil if none.
func (c *Client) NATReport(ctx context.Context) (*proto.NATReport, error) {
	var out *proto.NATReport
	err := c.do(ctx, func() error {
		r := c.nat.report
		if r == nil {
			r = c.cfg.NATReport
		}
		if r != nil {
			cp := *r
			out = &cp
		}
		return nil
	})
	return out, err
}

// natOnSignIn runs after every sign-in (loop goroutine): it resends a
// fresh report or starts a discovery.
func (c *Client) natOnSignIn() {
	d := c.cfg.DiscoverNAT
	if d == nil || c.nat.running {
		return // a running discovery sends its report when it ends
	}
	maxAge := d.MaxAge
	if maxAge == 0 {
		maxAge = 5 * time.Minute
	}
	if c.nat.report != nil && time.Since(c.nat.at) < maxAge {
		c.sendNATReport(c.nat.report, 0)
		return
	}
	server := d.Server
	if server == "" {
		server = pickSTUN(c.iceServers, c.cfg.ICEServers)
	}
	if server == "" {
		err := fmt.Errorf("%w: the server handed out no stun: URL and none is configured", ErrNoSTUN)
		c.log.Warn("client: NAT discovery", "err", err)
		c.events.push(NATEvent{Err: err})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.nat.cancel = cancel
	c.nat.running = true
	c.nat.wg.Add(1)
	go func() {
		defer c.nat.wg.Done()
		start := time.Now()
		rep, err := discoverNAT(ctx, d, server, c.log)
		elapsed := time.Since(start)
		c.box.post(func() { c.natDone(rep, err, elapsed) })
	}()
}

// natDone records a finished discovery and sends the report (loop goroutine).
func (c *Client) natDone(rep *proto.NATReport, err error, elapsed time.Duration) {
	c.nat.running = false
	if c.nat.cancel != nil {
		c.nat.cancel()
		c.nat.cancel = nil
	}
	if err != nil {
		c.log.Warn("client: NAT discovery failed", "err", err)
		c.events.push(NATEvent{Err: err, Elapsed: elapsed})
		return
	}
	c.nat.report, c.nat.at = rep, time.Now()
	c.log.Info("client: NAT discovered", "type", rep.Type, "public", rep.PublicAddr, "in", elapsed.Round(time.Millisecond))
	if c.sig == nil {
		return // offline: sent at the next sign-in
	}
	c.sendNATReport(rep, elapsed)
}

// sendNATReport sends r to the server and emits a NATEvent when it answers.
func (c *Client) sendNATReport(r *proto.NATReport, elapsed time.Duration) {
	cp := *r
	err := c.sendSigID(proto.TypeNATReport, randomID(), "", &cp, func(err error) {
		c.events.push(NATEvent{Report: &cp, Sent: err == nil, Err: err, Elapsed: elapsed})
	})
	if err != nil {
		c.events.push(NATEvent{Report: &cp, Err: err, Elapsed: elapsed})
	}
}

// natStop cancels a running discovery and waits for it (loop goroutine,
// at shutdown).
func (c *Client) natStop() {
	if c.nat.cancel != nil {
		c.nat.cancel()
	}
	c.nat.wg.Wait()
}

// discoverNAT probes the NAT through server and, if asked, the router's
// port mapping. It runs on its own goroutine.
func discoverNAT(ctx context.Context, d *NATDiscovery, server string, log *slog.Logger) (*proto.NATReport, error) {
	res, err := nat.Probe(ctx, nat.DiscoverConfig{
		Server:       server,
		Listener:     d.Listener,
		RTO:          d.RTO,
		Timeout:      d.Timeout,
		MaxTransmits: d.MaxTransmits,
	})
	if err != nil {
		return nil, fmt.Errorf("client: NAT discovery via %s: %w", server, err)
	}
	for _, n := range res.Notes {
		log.Debug("client: NAT discovery note", "note", n)
	}
	rep := res.Report
	if d.PortMapping && !rep.UDPBlocked {
		local, perr := netip.ParseAddrPort(rep.LocalAddr)
		if perr == nil && local.Port() != 0 {
			mc := d.MapPort
			mc.InternalPort = local.Port()
			m, err := nat.MapPort(ctx, mc)
			switch {
			case err == nil:
				m.Fill(rep)
				if rerr := m.Release(ctx); rerr != nil {
					log.Debug("client: release port mapping", "err", rerr)
				}
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case !errors.Is(err, nat.ErrNoPortMapping):
				log.Debug("client: port mapping", "err", err)
			}
		}
	}
	if err := rep.Validate(); err != nil {
		return nil, fmt.Errorf("client: NAT report: %w", err)
	}
	return rep, nil
}

// pickSTUN returns the first stun: URL (RFC 7064) among the lists, or "".
func pickSTUN(lists ...[]webrtc.ICEServer) string {
	for _, l := range lists {
		for _, s := range l {
			for _, u := range s.URLs {
				if len(u) > 5 && strings.EqualFold(u[:5], "stun:") {
					return "stun:" + u[5:]
				}
			}
		}
	}
	return ""
}
