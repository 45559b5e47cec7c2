package audio

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// OggReader demuxes the packets of the first logical stream of an Ogg file
// (RFC 3533), skipping the Opus identification and comment headers (RFC
// 7845 section 5). pion's oggreader yields whole pages; an opusenc file
// puts up to a second of packets in one page, so packets are split here by
// their lacing values.
type OggReader struct {
	r       *bufio.Reader
	serial  uint32
	started bool
	partial []byte   // packet continued across pages
	queue   [][]byte // complete packets of the current page
	headers int      // Opus header packets seen
}

// NewOggReader reads Ogg pages from r.
func NewOggReader(r io.Reader) *OggReader {
	return &OggReader{r: bufio.NewReader(r)}
}

// maxPacket bounds a packet assembled across pages.
const maxPacket = 64 << 10

// NextPacket returns the next Opus audio packet, or io.EOF at the end.
func (o *OggReader) NextPacket() ([]byte, error) {
	for {
		for len(o.queue) > 0 {
			p := o.queue[0]
			o.queue = o.queue[1:]
			if o.headers < 2 {
				if o.headers == 0 && !bytes.HasPrefix(p, []byte("OpusHead")) {
					return nil, ErrNotOpus
				}
				o.headers++
				continue
			}
			return p, nil
		}
		if err := o.readPage(); err != nil {
			return nil, err
		}
	}
}

// readPage reads one page of our stream and queues its complete packets.
// Page layout: RFC 3533 section 6.
func (o *OggReader) readPage() error {
	var hdr [27]byte
	if _, err := io.ReadFull(o.r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: truncated page header", ErrNotOgg)
		}
		return err // io.EOF at a page boundary is the clean end
	}
	if string(hdr[:4]) != "OggS" || hdr[4] != 0 {
		return fmt.Errorf("%w: bad capture pattern", ErrNotOgg)
	}
	serial := binary.LittleEndian.Uint32(hdr[14:18])
	nseg := int(hdr[26])
	lacing := make([]byte, nseg)
	if _, err := io.ReadFull(o.r, lacing); err != nil {
		return fmt.Errorf("%w: truncated segment table", ErrNotOgg)
	}
	total := 0
	for _, l := range lacing {
		total += int(l)
	}
	body := make([]byte, total)
	if _, err := io.ReadFull(o.r, body); err != nil {
		return fmt.Errorf("%w: truncated page body", ErrNotOgg)
	}
	if !o.started {
		o.started, o.serial = true, serial
	}
	if serial != o.serial {
		return nil // another logical stream: skip
	}
	if hdr[5]&1 == 0 { // not a continuation: drop any dangling partial
		o.partial = nil
	}
	off := 0
	for _, l := range lacing {
		o.partial = append(o.partial, body[off:off+int(l)]...)
		off += int(l)
		if len(o.partial) > maxPacket {
			return fmt.Errorf("%w: packet larger than %d bytes", ErrNotOgg, maxPacket)
		}
		if l < 255 {
			if len(o.partial) > 0 {
				o.queue = append(o.queue, o.partial)
			}
			o.partial = nil
		}
	}
	return nil
}
