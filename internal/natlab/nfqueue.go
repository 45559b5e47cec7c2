package natlab

// A minimal nfnetlink_queue client over a raw netlink socket: enough to
// receive queued packet ids and return verdicts. The message layout is the
// kernel's include/uapi/linux/netfilter/nfnetlink_queue.h; netlink framing
// is RFC 3549 section 2.3.2.

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// nfnetlink constants (linux/netfilter/nfnetlink.h, nfnetlink_queue.h).
const (
	nfnlSubsysQueue = 3

	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3

	nfqnlCfgCmdBind   = 1
	nfqnlCfgCmdUnbind = 2

	nfqnlCopyMeta = 1

	nfDrop   = 0
	nfAccept = 1

	nlaTypeMask = 0x3fff // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
	nlmsgHdrLen = 16
	nfgenHdrLen = 4
)

// nfqPacket is one queued packet as the kernel announced it.
type nfqPacket struct {
	ID      uint32 // packet id to give the verdict for
	HWProto uint16 // ethertype, network byte order decoded
	Hook    uint8  // netfilter hook number it was queued from
}

// nfq is one bound queue on a netlink socket. The socket lives in the
// namespace it was opened in (see Host.Do).
type nfq struct {
	f     *os.File
	rc    syscall.RawConn
	queue uint16
	seq   atomic.Uint32
}

// openNFQ opens a netlink socket in the calling thread's namespace and
// binds queue number queue in metadata-only copy mode.
func openNFQ(queue uint16, maxLen uint32) (*nfq, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("%w: socket: %v", ErrNetlink, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: bind: %v", ErrNetlink, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	f := os.NewFile(uintptr(fd), "nfqueue")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %v", ErrNetlink, err)
	}
	q := &nfq{f: f, rc: rc, queue: queue}
	// struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
	if err := q.config(nlattr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})); err != nil {
		q.f.Close()
		return nil, fmt.Errorf("bind queue %d: %w", queue, err)
	}
	// struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } packed
	params := []byte{0, 0, 0, 0, nfqnlCopyMeta}
	maxl := binary.BigEndian.AppendUint32(nil, maxLen)
	if err := q.config(nlattr(nfqaCfgParams, params), nlattr(nfqaCfgQueueMax, maxl)); err != nil {
		q.f.Close()
		return nil, fmt.Errorf("configure queue %d: %w", queue, err)
	}
	return q, nil
}

// close unbinds (best effort) and closes the socket; a blocked recv
// returns. Packets still in the kernel queue are dropped by the kernel.
func (q *nfq) close() error {
	msg, _ := q.message(nfqnlMsgConfig, unix.NLM_F_REQUEST, nlattr(nfqaCfgCmd, []byte{nfqnlCfgCmdUnbind, 0, 0, 0}))
	_ = q.send(msg)
	return q.f.Close()
}

// message frames attrs as one nfnetlink_queue message.
func (q *nfq) message(msgType uint16, flags uint16, attrs ...[]byte) ([]byte, uint32) {
	seq := q.seq.Add(1)
	return encodeNFQMessage(msgType, flags, seq, q.queue, attrs...), seq
}

// encodeNFQMessage builds nlmsghdr + nfgenmsg + attributes.
func encodeNFQMessage(msgType, flags uint16, seq uint32, queue uint16, attrs ...[]byte) []byte {
	n := nlmsgHdrLen + nfgenHdrLen
	for _, a := range attrs {
		n += len(a)
	}
	b := make([]byte, 0, n)
	b = binary.NativeEndian.AppendUint32(b, uint32(n))
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysQueue<<8|msgType)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // pid: kernel
	b = append(b, unix.AF_UNSPEC, 0)           // nfgenmsg family, NFNETLINK_V0
	b = binary.BigEndian.AppendUint16(b, queue)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// nlattr encodes one netlink attribute, padded to 4 bytes.
func nlattr(typ uint16, payload []byte) []byte {
	l := 4 + len(payload)
	b := make([]byte, 0, align4(l))
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b) < align4(l) {
		b = append(b, 0)
	}
	return b
}

func align4(n int) int { return (n + 3) &^ 3 }

// config sends a config message and waits for the kernel's ack.
func (q *nfq) config(attrs ...[]byte) error {
	msg, seq := q.message(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs...)
	if err := q.send(msg); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, err := q.recv(buf)
		if err != nil {
			return err
		}
		acked, err := findAck(buf[:n], seq)
		if err != nil {
			return err
		}
		if acked {
			return nil
		}
	}
}

// findAck scans netlink messages for the NLMSG_ERROR answering seq:
// (true, nil) for an ack, (true, err) for a refusal.
func findAck(b []byte, seq uint32) (bool, error) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			return false, fmt.Errorf("%w: truncated message (%d of %d bytes)", ErrNetlink, len(b), l)
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		mseq := binary.NativeEndian.Uint32(b[8:12])
		if typ == unix.NLMSG_ERROR && mseq == seq {
			if l < nlmsgHdrLen+4 {
				return true, fmt.Errorf("%w: short error message", ErrNetlink)
			}
			if code := int32(binary.NativeEndian.Uint32(b[16:20])); code != 0 {
				return true, fmt.Errorf("%w: kernel refused: %v", ErrNetlink, syscall.Errno(-code))
			}
			return true, nil
		}
		b = b[min(align4(l), len(b)):]
	}
	return false, nil
}

// verdict tells the kernel what to do with packet id.
func (q *nfq) verdict(id uint32, v uint32) error {
	// struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
	hdr := binary.BigEndian.AppendUint32(nil, v)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	msg, _ := q.message(nfqnlMsgVerdict, unix.NLM_F_REQUEST, nlattr(nfqaVerdictHdr, hdr))
	return q.send(msg)
}

func (q *nfq) send(msg []byte) error {
	var serr error
	err := q.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return fmt.Errorf("%w: send: %v", ErrNetlink, err)
	}
	if serr != nil {
		return fmt.Errorf("%w: send: %v", ErrNetlink, serr)
	}
	return nil
}

// recv reads one netlink datagram (possibly several messages). It returns
// os.ErrClosed once the queue is closed.
func (q *nfq) recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := q.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr == unix.ENOBUFS {
		return 0, nil // overrun: the kernel dropped some; keep going
	}
	if rerr != nil {
		return 0, fmt.Errorf("%w: recv: %v", ErrNetlink, rerr)
	}
	return n, nil
}

// parsePackets decodes the packet notifications in one netlink datagram.
// It never panics on malformed input; other message types are skipped.
func parsePackets(b []byte, out []nfqPacket) ([]nfqPacket, error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, fmt.Errorf("%w: %d trailing bytes", ErrNetlink, len(b))
		}
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			return out, fmt.Errorf("%w: message length %d of %d bytes", ErrNetlink, l, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		body := b[nlmsgHdrLen:l]
		b = b[min(align4(l), len(b)):]
		if typ != nfnlSubsysQueue<<8|nfqnlMsgPacket {
			continue
		}
		if len(body) < nfgenHdrLen {
			return out, fmt.Errorf("%w: packet message without nfgenmsg", ErrNetlink)
		}
		p, err := parsePacketAttrs(body[nfgenHdrLen:])
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

var errNoPacketHdr = fmt.Errorf("%w: packet message without NFQA_PACKET_HDR", ErrNetlink)

func parsePacketAttrs(b []byte) (nfqPacket, error) {
	var p nfqPacket
	found := false
	for len(b) > 0 {
		if len(b) < 4 {
			return p, fmt.Errorf("%w: %d trailing attribute bytes", ErrNetlink, len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return p, fmt.Errorf("%w: attribute length %d of %d bytes", ErrNetlink, l, len(b))
		}
		v := b[4:l]
		b = b[min(align4(l), len(b)):]
		if typ == nfqaPacketHdr {
			// struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; } packed
			if len(v) < 7 {
				return p, fmt.Errorf("%w: packet header of %d bytes", ErrNetlink, len(v))
			}
			p.ID = binary.BigEndian.Uint32(v[0:4])
			p.HWProto = binary.BigEndian.Uint16(v[4:6])
			p.Hook = v[6]
			found = true
		}
	}
	if !found {
		return p, errNoPacketHdr
	}
	return p, nil
}
