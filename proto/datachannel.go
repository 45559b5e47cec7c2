package proto

import (
	"encoding/json"
	"unicode/utf8"
)

// DataChannelLabel is the label of the chat data channel every Parley peer
// connection carries.
const DataChannelLabel = "parley-chat"

// DCType names a message on the chat data channel.
type DCType string

const (
	DCChat      DCType = "chat"      // a chat message
	DCDelivered DCType = "delivered" // receipt for ID
	DCRead      DCType = "read"      // read receipt for ID
	DCTyping    DCType = "typing"    // typing indicator
	DCMute      DCType = "mute"      // in a call: the sender muted (Muted) or unmuted its microphone
)

// DCMessage is one message on the chat data channel. The channel is
// DTLS-SCTP end to end, so relays never see these fields.
type DCMessage struct {
	Type   DCType `json:"type"`
	ID     string `json:"id,omitempty"`
	Text   string `json:"text,omitempty"`
	Time   int64  `json:"ts,omitempty"`
	Typing bool   `json:"typing,omitempty"`
	Muted  bool   `json:"muted,omitempty"` // DCMute
	// Seq is a chat message's number (Chat.Seq).
	Seq uint64 `json:"seq,omitempty"`
	// Display is the sender's display name on a chat message (Chat.Display).
	Display string `json:"display,omitempty"`
	// File is the offered file of a chat message that offers one, or of
	// a DCFile with op offer (files.go).
	File *FileInfo `json:"file,omitempty"`
	// The rest of a DCFile's FileControl.
	Op     FileOp `json:"op,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	Hash   string `json:"hash,omitempty"`
	Code   Code   `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// FileControl returns the FileControl a DCFile message carries.
func (m *DCMessage) FileControl() *FileControl {
	return &FileControl{Op: m.Op, ID: m.ID, File: m.File, Offset: m.Offset, Hash: m.Hash, Code: m.Code, Reason: m.Reason}
}

// DCFileMessage is the DCFile message that carries c.
func DCFileMessage(c *FileControl) *DCMessage {
	return &DCMessage{Type: DCFile, Op: c.Op, ID: c.ID, File: c.File, Offset: c.Offset, Hash: c.Hash, Code: c.Code, Reason: c.Reason}
}

// MaxDCMessage bounds one data-channel message.
const MaxDCMessage = 16 << 10

// DecodeDC parses and validates a data-channel message.
func DecodeDC(data []byte) (*DCMessage, error) {
	if len(data) > MaxDCMessage {
		return nil, Errorf(CodeTooLarge, "data channel message of %d bytes exceeds %d", len(data), MaxDCMessage)
	}
	if !utf8.Valid(data) {
		return nil, Errorf(CodeBadRequest, "data channel message is not valid UTF-8")
	}
	var m DCMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, Errorf(CodeBadFrame, "data channel message: %v", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the fields its type needs.
func (m *DCMessage) Validate() error {
	switch m.Type {
	case DCChat:
		return (&Chat{ID: m.ID, Text: m.Text, Time: m.Time, File: m.File}).Validate()
	case DCFile:
		return m.FileControl().Validate()
	case DCDelivered, DCRead:
		return ValidateID(m.ID)
	case DCTyping, DCMute:
		return nil
	}
	return Errorf(CodeUnknownType, "unknown data channel message type %q", truncate(string(m.Type), 32))
}

// EncodeDC marshals m after validating it.
func EncodeDC(m *DCMessage) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}
