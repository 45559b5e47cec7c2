package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/parley-voice/parley/proto"
)

// MapPortConfig configures MapPort. Zero values are documented next to
// each field. Tests must set Gateway and UPnP (or the Disable flags): the
// defaults talk to the real default gateway and multicast on the LAN.
type MapPortConfig struct {
	// InternalPort is the local UDP port to open from outside. Required.
	InternalPort uint16
	// ExternalPort is the external port to ask for. Zero asks for
	// InternalPort; the gateway may give another.
	ExternalPort uint16
	// Lifetime is the lease asked for. Zero means 2 hours (RFC 6886
	// section 3.3 recommends 7200 s). Renew at half of the lifetime the
	// returned PortMapping reports by calling MapPort again.
	Lifetime time.Duration
	// Description labels UPnP mappings in the router's UI. Empty means
	// "parley".
	Description string

	// Gateway finds the NAT-PMP/PCP server's IP. Nil means DefaultGateway
	// (the IPv4 default route of the current network namespace).
	Gateway func() (netip.Addr, error)
	// PMPPort is the NAT-PMP/PCP server port. Zero means 5351.
	PMPPort uint16
	// UPnP finds IGD services. Nil means DiscoverUPnP (SSDP multicast on
	// the LAN); UPnPAt(url) reads a known device description instead.
	UPnP func(ctx context.Context) ([]IGDClient, error)
	// DisableUPnP, DisablePCP and DisablePMP skip a protocol.
	DisableUPnP, DisablePCP, DisablePMP bool

	// Dialer opens the NAT-PMP/PCP socket and finds our LAN address
	// towards a UPnP IGD. Nil means &net.Dialer{}.
	Dialer Dialer
	// RTO is the first NAT-PMP/PCP retransmission timeout, doubled after
	// each send. Zero means 250ms (RFC 6886 section 3.1).
	RTO time.Duration
	// Timeout bounds each protocol's attempt. Zero means 2s (the RFCs
	// retry for minutes; a call setup cannot wait that long).
	Timeout time.Duration

	// Logger receives one DEBUG line per protocol tried. Nil discards.
	Logger *slog.Logger
}

// PortMapping is a mapping a gateway granted.
type PortMapping struct {
	// Protocol is "upnp", "pcp" or "nat-pmp", as proto.NATReport names it.
	Protocol string
	// Internal is our address and port as the gateway sees them.
	Internal netip.AddrPort
	// External is the public address and port that now reaches Internal.
	External netip.AddrPort
	// Lifetime is the granted lease; zero means permanent (UPnP lease 0).
	Lifetime time.Duration
	// Gateway is the device that granted it.
	Gateway netip.Addr

	release func(ctx context.Context) error
}

// Fill records the mapping in a NAT report.
func (m *PortMapping) Fill(r *proto.NATReport) {
	if m == nil || r == nil {
		return
	}
	r.PortMapping = m.Protocol
	r.MappedAddr = m.External.String()
}

// Release asks the gateway to delete the mapping (UPnP DeletePortMapping,
// or a NAT-PMP/PCP request with lifetime 0).
func (m *PortMapping) Release(ctx context.Context) error {
	if m == nil || m.release == nil {
		return nil
	}
	if err := m.release(ctx); err != nil {
		return fmt.Errorf("nat: release %s mapping %s: %w", m.Protocol, m.External, err)
	}
	return nil
}

// MapPort asks the home router for an inbound UDP mapping to
// cfg.InternalPort, trying UPnP IGD first, then PCP (RFC 6887), then
// NAT-PMP (RFC 6886) as RFC 6887 section 9 orders the last two. It returns
// an error wrapping ErrNoPortMapping, with each protocol's reason, when
// none gave a mapping.
func MapPort(ctx context.Context, cfg MapPortConfig) (*PortMapping, error) {
	if cfg.InternalPort == 0 {
		return nil, fmt.Errorf("%w: MapPortConfig.InternalPort is required", ErrBadConfig)
	}
	if cfg.RTO < 0 || cfg.Timeout < 0 || cfg.Lifetime < 0 {
		return nil, fmt.Errorf("%w: negative RTO, Timeout or Lifetime", ErrBadConfig)
	}
	if cfg.Lifetime > 0 && cfg.Lifetime < time.Second {
		return nil, fmt.Errorf("%w: Lifetime below one second", ErrBadConfig)
	}
	if cfg.ExternalPort == 0 {
		cfg.ExternalPort = cfg.InternalPort
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = 2 * time.Hour
	}
	if cfg.Lifetime > time.Duration(1<<32-1)*time.Second {
		cfg.Lifetime = time.Duration(1<<32-1) * time.Second
	}
	if cfg.Description == "" {
		cfg.Description = "parley"
	}
	if cfg.Gateway == nil {
		cfg.Gateway = DefaultGateway
	}
	if cfg.PMPPort == 0 {
		cfg.PMPPort = PMPPort
	}
	if cfg.UPnP == nil {
		cfg.UPnP = DiscoverUPnP
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.RTO == 0 {
		cfg.RTO = 250 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var errs []error
	if !cfg.DisableUPnP {
		uctx, cancel := context.WithTimeout(ctx, cfg.Timeout+2*time.Second) // SSDP alone waits 2s
		m, err := mapUPnP(uctx, &cfg)
		cancel()
		log.Debug("upnp", "mapping", m, "err", err)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("upnp: %w", err))
	}
	if !cfg.DisablePCP || !cfg.DisablePMP {
		m, err := mapPMPFamily(ctx, &cfg, log)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoPortMapping, errors.Join(errs...))
}

// mapPMPFamily tries PCP, then NAT-PMP, against the gateway.
func mapPMPFamily(ctx context.Context, cfg *MapPortConfig, log *slog.Logger) (*PortMapping, error) {
	gwIP, err := cfg.Gateway()
	if err != nil {
		return nil, fmt.Errorf("pcp/nat-pmp: %w", err)
	}
	gwIP = gwIP.Unmap()
	gw := netip.AddrPortFrom(gwIP, cfg.PMPPort)
	c, err := dialPMP(ctx, cfg.Dialer, gw, cfg.RTO, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("pcp/nat-pmp: %w", err)
	}
	defer c.close()
	lifetime := uint32(cfg.Lifetime / time.Second)
	var errs []error
	if !cfg.DisablePCP {
		r, err := c.mapPCP(ctx, cfg.InternalPort, cfg.ExternalPort, lifetime)
		log.Debug("pcp", "gateway", gw, "external", r.externalIP, "port", r.externalPort, "err", err)
		if err == nil {
			nonce := r.nonce
			return &PortMapping{
				Protocol: "pcp",
				Internal: netip.AddrPortFrom(c.client, cfg.InternalPort),
				External: netip.AddrPortFrom(r.externalIP, r.externalPort),
				Lifetime: secondsDuration(r.lifetime),
				Gateway:  gwIP,
				release: func(ctx context.Context) error {
					// RFC 6887 section 15: the same nonce with lifetime 0
					// deletes the mapping.
					c, err := dialPMP(ctx, cfg.Dialer, gw, cfg.RTO, cfg.Timeout)
					if err != nil {
						return err
					}
					defer c.close()
					return c.deletePCP(ctx, nonce, cfg.InternalPort)
				},
			}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("pcp at %s: %w", gw, err))
		// A PCP server that answered in PCP has spoken: NAT-PMP would not
		// do better (RFC 6887 section 9). Fall back only after silence or
		// a NAT-PMP UNSUPP_VERSION.
		if !errors.Is(err, errNoAnswer) && !errors.Is(err, errPCPUnsupported) {
			return nil, errors.Join(errs...)
		}
	}
	if !cfg.DisablePMP {
		m, err := mapWithPMP(ctx, c, cfg, gwIP, lifetime)
		log.Debug("nat-pmp", "gateway", gw, "mapping", m, "err", err)
		if err == nil {
			return m, nil
		}
		errs = append(errs, fmt.Errorf("nat-pmp at %s: %w", gw, err))
	}
	return nil, errors.Join(errs...)
}

func mapWithPMP(ctx context.Context, c *pmpClient, cfg *MapPortConfig, gwIP netip.Addr, lifetime uint32) (*PortMapping, error) {
	extIP, err := c.publicAddrPMP(ctx)
	if err != nil {
		return nil, fmt.Errorf("public address: %w", err)
	}
	r, err := c.mapPMP(ctx, cfg.InternalPort, cfg.ExternalPort, lifetime)
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	gw := netip.AddrPortFrom(gwIP, cfg.PMPPort)
	return &PortMapping{
		Protocol: "nat-pmp",
		Internal: netip.AddrPortFrom(c.client, cfg.InternalPort),
		External: netip.AddrPortFrom(extIP, r.externalPort),
		Lifetime: secondsDuration(r.lifetime),
		Gateway:  gwIP,
		release: func(ctx context.Context) error {
			// RFC 6886 section 3.4: lifetime 0 and external port 0 deletes.
			c, err := dialPMP(ctx, cfg.Dialer, gw, cfg.RTO, cfg.Timeout)
			if err != nil {
				return err
			}
			defer c.close()
			_, err = c.mapPMP(ctx, cfg.InternalPort, 0, 0)
			return err
		},
	}, nil
}

// deletePCP removes a PCP mapping: MAP with the same nonce, lifetime 0.
func (c *pmpClient) deletePCP(ctx context.Context, nonce [12]byte, internal uint16) error {
	req := pcpMapRequest(c.client, nonce, internal, 0, 0)
	var fail error
	err := c.roundTrip(ctx, req, func(b []byte) bool {
		r, err := parsePCPResponse(b)
		if err != nil || r.opcode != pcpOpMap || (r.hasMap && r.nonce != nonce) {
			return false
		}
		if r.result != resultSuccess {
			fail = fmt.Errorf("%w: PCP result %d", ErrMappingRefused, r.result)
		}
		return true
	})
	if err == nil {
		err = fail
	}
	return err
}

func secondsDuration(s uint32) time.Duration { return time.Duration(s) * time.Second }
