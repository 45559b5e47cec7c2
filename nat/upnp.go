package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// IGDClient is the part of a UPnP IGD WANIPConnection or WANPPPConnection
// service that MapPort uses. The clients of goupnp's internetgateway2
// package satisfy it.
type IGDClient interface {
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string,
		internalPort uint16, internalClient string, enabled bool, description string, leaseSeconds uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetServiceClient() *goupnp.ServiceClient
}

// UPnP error codes of the IGD WANIPConnection service.
const (
	upnpConflict       = 718 // ConflictInMappingEntry
	upnpOnlyPermanent  = 725 // OnlyPermanentLeasesSupported
	upnpSearchTargetV1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
	upnpSearchTargetV2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
)

// DiscoverUPnP finds IGD services on the LAN with an SSDP multicast search
// (about two seconds per search). It is what MapPort uses when
// MapPortConfig.UPnP is nil.
func DiscoverUPnP(ctx context.Context) ([]IGDClient, error) {
	var out []IGDClient
	var errs []error
	for _, target := range []string{upnpSearchTargetV1, upnpSearchTargetV2} {
		devs, err := goupnp.DiscoverDevicesCtx(ctx, target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, d := range devs {
			if d.Err != nil {
				errs = append(errs, d.Err)
				continue
			}
			out = append(out, igdClients(d.Root, d.Location)...)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, errors.New("no UPnP IGD answered")
}

// UPnPAt returns a MapPortConfig.UPnP function that skips SSDP and reads
// the IGD's device description at loc (a known router, or a test IGD).
func UPnPAt(loc *url.URL) func(context.Context) ([]IGDClient, error) {
	return func(ctx context.Context) ([]IGDClient, error) {
		root, err := goupnp.DeviceByURLCtx(ctx, loc)
		if err != nil {
			return nil, err
		}
		cs := igdClients(root, loc)
		if len(cs) == 0 {
			return nil, fmt.Errorf("device at %s has no WANIPConnection or WANPPPConnection service", loc.Redacted())
		}
		return cs, nil
	}
}

// igdClients lists the connection services of a root device, newest first.
func igdClients(root *goupnp.RootDevice, loc *url.URL) []IGDClient {
	var out []IGDClient
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	return out
}

// upnpErrorCode extracts the UPnP error code from a SOAP fault, or 0.
func upnpErrorCode(err error) int {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return f.Detail.UPnPError.Errorcode
	}
	return 0
}

// mapUPnP asks each IGD service in turn for a UDP port mapping.
func mapUPnP(ctx context.Context, cfg *MapPortConfig) (*PortMapping, error) {
	clients, err := cfg.UPnP(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, c := range clients {
		m, err := mapOneIGD(ctx, cfg, c)
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errors.New("no IGD services")
	}
	return nil, errors.Join(errs...)
}

func mapOneIGD(ctx context.Context, cfg *MapPortConfig, c IGDClient) (*PortMapping, error) {
	sc := c.GetServiceClient()
	endpoint := sc.SOAPClient.EndpointURL
	// Our LAN address as the IGD sees it: from SSDP when known, else from
	// the route to the IGD's control URL.
	local, _ := netip.AddrFromSlice(sc.LocalAddr())
	if !local.IsValid() {
		host := endpoint.Hostname()
		port := endpoint.Port()
		if port == "" {
			port = "80"
		}
		conn, err := cfg.Dialer.DialContext(ctx, "udp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("find local address towards IGD %s: %w", endpoint.Host, err)
		}
		local = addrPortOf(conn.LocalAddr()).Addr()
		_ = conn.Close()
	}
	local = local.Unmap()
	ext := cfg.ExternalPort
	lease := uint32(cfg.Lifetime.Seconds())
	add := func(lease uint32) error {
		return c.AddPortMappingCtx(ctx, "", ext, "UDP", cfg.InternalPort, local.String(), true, cfg.Description, lease)
	}
	err := add(lease)
	if upnpErrorCode(err) == upnpOnlyPermanent {
		// Many IGDv1 routers only accept a lease of 0 (permanent).
		lease = 0
		err = add(lease)
	}
	if v2, ok := c.(*internetgateway2.WANIPConnection2); ok && upnpErrorCode(err) == upnpConflict {
		// IGDv2 can choose a free external port for us.
		ext, err = v2.AddAnyPortMappingCtx(ctx, "", ext, "UDP", cfg.InternalPort, local.String(), true, cfg.Description, lease)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: UPnP AddPortMapping at %s: %v", ErrMappingRefused, endpoint.Host, err)
	}
	release := func(ctx context.Context) error {
		return c.DeletePortMappingCtx(ctx, "", ext, "UDP")
	}
	ipStr, err := c.GetExternalIPAddressCtx(ctx)
	if err != nil {
		_ = release(ctx)
		return nil, fmt.Errorf("UPnP GetExternalIPAddress at %s: %w", endpoint.Host, err)
	}
	extIP, err := netip.ParseAddr(ipStr)
	if err != nil || extIP.IsUnspecified() {
		_ = release(ctx)
		return nil, fmt.Errorf("%w: UPnP external IP %q", ErrMalformed, ipStr)
	}
	gw, _ := netip.ParseAddr(endpoint.Hostname())
	return &PortMapping{
		Protocol: "upnp",
		Internal: netip.AddrPortFrom(local, cfg.InternalPort),
		External: netip.AddrPortFrom(extIP.Unmap(), ext),
		Lifetime: secondsDuration(lease),
		Gateway:  gw,
		release:  release,
	}, nil
}
