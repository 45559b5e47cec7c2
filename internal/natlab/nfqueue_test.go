package natlab

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// packetMessage encodes a kernel-style NFQNL_MSG_PACKET for p, with extra
// attributes around the header as the kernel sends (ifindex, payload).
func packetMessage(p nfqPacket, extra bool) []byte {
	hdr := binary.BigEndian.AppendUint32(nil, p.ID)
	hdr = binary.BigEndian.AppendUint16(hdr, p.HWProto)
	hdr = append(hdr, p.Hook)
	attrs := [][]byte{nlattr(nfqaPacketHdr, hdr)}
	if extra {
		attrs = append([][]byte{nlattr(5, []byte{0, 0, 0, 2})}, append(attrs, nlattr(10, []byte{0x45, 0, 0, 20, 1}))...)
	}
	return encodeNFQMessage(nfqnlMsgPacket, 0, 0, 0, attrs...)
}

func TestParsePackets(t *testing.T) {
	p1 := nfqPacket{ID: 1, HWProto: 0x0800, Hook: 2}
	p2 := nfqPacket{ID: 0xfffffffe, HWProto: 0x86dd, Hook: 4}
	verdict := encodeNFQMessage(nfqnlMsgVerdict, 0, 3, 0, nlattr(nfqaVerdictHdr, make([]byte, 8)))
	noHdr := encodeNFQMessage(nfqnlMsgPacket, 0, 0, 0, nlattr(10, []byte{1, 2, 3}))
	shortHdr := encodeNFQMessage(nfqnlMsgPacket, 0, 0, 0, nlattr(nfqaPacketHdr, []byte{1, 2, 3}))
	cat := func(bs ...[]byte) []byte { return slices.Concat(bs...) }
	badLen := packetMessage(p1, false)
	binary.NativeEndian.PutUint32(badLen, 9999)
	badAttr := packetMessage(p1, false)
	binary.NativeEndian.PutUint16(badAttr[20:], 2) // attribute length below 4

	cases := []struct {
		name string
		in   []byte
		want []nfqPacket
		err  bool
	}{
		{"empty", nil, nil, false},
		{"one", packetMessage(p1, false), []nfqPacket{p1}, false},
		{"with other attributes", packetMessage(p2, true), []nfqPacket{p2}, false},
		{"two in one datagram", cat(packetMessage(p1, true), packetMessage(p2, false)), []nfqPacket{p1, p2}, false},
		{"other message types skipped", cat(verdict, packetMessage(p2, false)), []nfqPacket{p2}, false},
		{"trailing bytes", cat(packetMessage(p1, false), []byte{1, 2}), []nfqPacket{p1}, true},
		{"length beyond buffer", badLen, nil, true},
		{"bad attribute length", badAttr, nil, true},
		{"no packet header", noHdr, nil, true},
		{"short packet header", shortHdr, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parsePackets(c.in, nil)
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error=%v", err, c.err)
			}
			if err != nil && !errors.Is(err, ErrNetlink) {
				t.Fatalf("error %v is not ErrNetlink", err)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestFindAck(t *testing.T) {
	errMsg := func(seq uint32, code int32) []byte {
		b := binary.NativeEndian.AppendUint32(nil, 36)
		b = binary.NativeEndian.AppendUint16(b, unix.NLMSG_ERROR)
		b = binary.NativeEndian.AppendUint16(b, 0)
		b = binary.NativeEndian.AppendUint32(b, seq)
		b = binary.NativeEndian.AppendUint32(b, 0)
		b = binary.NativeEndian.AppendUint32(b, uint32(code))
		return append(b, make([]byte, 16)...) // the echoed request header
	}
	cases := []struct {
		name  string
		in    []byte
		seq   uint32
		acked bool
		err   bool
	}{
		{"ack", errMsg(7, 0), 7, true, false},
		{"refused", errMsg(7, -int32(unix.EPERM)), 7, true, true},
		{"other seq", errMsg(6, 0), 7, false, false},
		{"after a packet", slices.Concat(packetMessage(nfqPacket{ID: 1}, false), errMsg(7, 0)), 7, true, false},
		{"truncated", errMsg(7, 0)[:20], 7, false, true},
		{"empty", nil, 7, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			acked, err := findAck(c.in, c.seq)
			if acked != c.acked || (err != nil) != c.err {
				t.Fatalf("findAck = %v, %v; want %v, error=%v", acked, err, c.acked, c.err)
			}
		})
	}
}

func TestNLAttrPadding(t *testing.T) {
	for n := 0; n < 9; n++ {
		a := nlattr(3, make([]byte, n))
		if len(a)%4 != 0 || int(binary.NativeEndian.Uint16(a)) != 4+n {
			t.Fatalf("nlattr with %d bytes: len %d, header %d", n, len(a), binary.NativeEndian.Uint16(a))
		}
	}
}

// FuzzParsePackets feeds arbitrary datagrams to the decoder: it must not
// panic, and whatever it decodes must re-encode and decode to the same
// packets.
func FuzzParsePackets(f *testing.F) {
	f.Add(packetMessage(nfqPacket{ID: 1, HWProto: 0x0800, Hook: 2}, false))
	f.Add(slices.Concat(packetMessage(nfqPacket{ID: 9, HWProto: 0x0800, Hook: 2}, true), packetMessage(nfqPacket{ID: 10}, false)))
	f.Add(encodeNFQMessage(nfqnlMsgVerdict, 0, 3, 0, nlattr(nfqaVerdictHdr, make([]byte, 8))))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, err := parsePackets(b, nil)
		if err != nil && !errors.Is(err, ErrNetlink) {
			t.Fatalf("error %v is not ErrNetlink", err)
		}
		var again []byte
		for _, p := range pkts {
			again = append(again, packetMessage(p, false)...)
		}
		back, err := parsePackets(again, nil)
		if err != nil || !slices.Equal(back, pkts) {
			t.Fatalf("round trip: %+v -> %+v, %v", pkts, back, err)
		}
	})
}
