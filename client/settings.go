package client

import (
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// LoopbackOnly restricts ICE to the loopback interface: host candidates on
// 127.0.0.1 only, no mDNS. For tests and single-machine demos, where no
// packet may leave the machine.
func LoopbackOnly(se *webrtc.SettingEngine) {
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
}
