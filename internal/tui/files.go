package tui

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
)

// File transfer in the terminal: /send PATH offers a file to the open
// conversation; an offer to us shows on the banner line until /accept or
// /decline; each transfer under way gets a line with a progress bar,
// bytes, rate and time left above the input.

// fileInfo is one transfer as the screen shows it.
type fileInfo struct {
	id, peer, name, typ string
	out                 bool
	state               string // offered, active, done, failed
	size, bytes         int64
	rate, eta           float64
	path                string // direct or relay
	saved, reason       string
	at                  time.Time // offered (for order)
}

// maxFileLines bounds the transfer lines above the input.
const maxFileLines = 3

type fileSentMsg struct {
	peer, path, id string
	err            error
}

// sendFile offers the file at arg to the open conversation's peer.
func (m *model) sendFile(arg string) tea.Cmd {
	peer := m.current
	if peer == "" {
		m.setNotice(true, "no conversation open: /add NAME first")
		return nil
	}
	if arg == "" {
		m.setNotice(true, "usage: /send PATH")
		return nil
	}
	if m.refuseChanged(peer) {
		return nil
	}
	path := arg
	if strings.HasPrefix(path, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			path = filepath.Join(home, path[2:])
		}
	}
	m.setNotice(false, "checking %s…", filepath.Base(path))
	return func() tea.Msg {
		id, err := m.c.SendFile(m.ctx, peer, path)
		return fileSentMsg{peer: peer, path: path, id: id, err: err}
	}
}

func (m *model) onFileSent(msg fileSentMsg) {
	if msg.err != nil {
		m.setNotice(true, "not sent: %v", msg.err)
		return
	}
	if _, ok := m.files[msg.id]; !ok {
		st, _ := os.Stat(msg.path)
		var size int64
		if st != nil {
			size = st.Size()
		}
		name := filepath.Base(msg.path)
		m.files[msg.id] = &fileInfo{id: msg.id, peer: msg.peer, name: name, out: true, state: "offered", size: size, at: time.Now()}
		// The offer is a message of the conversation (its receipt ticks it).
		if err := m.db.SaveOutgoing(msg.peer, msg.id, fmt.Sprintf("📎 %s (%s)", name, client.HumanBytes(size)), time.Now().UnixMilli(), history.Sending); err != nil {
			m.setNotice(true, "history: %v", err)
			return
		}
		if st, ok := m.early[msg.id]; ok {
			delete(m.early, msg.id)
			m.db.SetStatus(msg.peer, msg.id, st)
		}
		if msg.peer == m.current {
			m.reloadMessages()
		}
	}
	m.setNotice(false, "offered %s to %s; it goes once they accept", filepath.Base(msg.path), msg.peer)
}

// offerFor is the oldest offer waiting for our answer from arg (a name),
// from the open conversation's peer, or — with neither — from anyone.
func (m *model) offerFor(arg string) *fileInfo {
	var offers []*fileInfo
	for _, f := range m.files {
		if !f.out && f.state == "offered" {
			offers = append(offers, f)
		}
	}
	sort.Slice(offers, func(i, j int) bool { return offers[i].at.Before(offers[j].at) })
	who := strings.ToLower(strings.TrimSpace(arg))
	for _, f := range offers {
		if who != "" && f.peer == who || who == "" && f.peer == m.current {
			return f
		}
	}
	if who == "" && len(offers) > 0 {
		return offers[0]
	}
	return nil
}

func (m *model) acceptFile(f *fileInfo) tea.Cmd {
	if m.refuseChanged(f.peer) {
		return nil
	}
	f.state = "active"
	m.setNotice(false, "receiving %s from %s…", f.name, f.peer)
	id := f.id
	return m.do("accept "+f.name, func() error { return m.c.AcceptFile(m.ctx, id) })
}

func (m *model) declineFile(f *fileInfo) tea.Cmd {
	f.state = "failed"
	f.reason = "declined"
	m.setNotice(false, "declined %s from %s", f.name, f.peer)
	id := f.id
	return m.do("decline "+f.name, func() error { return m.c.DeclineFile(m.ctx, id, "") })
}

// onFileEvent follows a transfer.
func (m *model) onFileEvent(ev client.Event) tea.Cmd {
	get := func(id, peer, name string, out bool) *fileInfo {
		f := m.files[id]
		if f == nil {
			f = &fileInfo{id: id, peer: peer, name: name, out: out, at: time.Now()}
			m.files[id] = f
		}
		return f
	}
	switch e := ev.(type) {
	case client.FileOfferEvent:
		f := get(e.ID, e.From, e.Name, false)
		f.size, f.typ, f.state = e.Size, e.Type, "offered"
		if e.Auto {
			f.state = "active"
			return nil
		}
		return m.bell()
	case client.FileProgressEvent:
		f := get(e.ID, e.Peer, "", e.Direction == "send")
		if f.state == "done" || f.state == "failed" {
			return nil
		}
		f.state, f.bytes, f.size, f.rate, f.eta, f.path = "active", e.Bytes, e.Size, e.Rate, e.ETA, e.Path
	case client.FileDoneEvent:
		f := get(e.ID, e.Peer, e.Name, e.Direction == "send")
		f.state, f.bytes, f.saved = "done", e.Size, e.File
		if f.out {
			m.setNotice(false, "✓ %s arrived at %s (SHA-256 checked)", e.Name, e.Peer)
		} else {
			m.setNotice(false, "✓ %s from %s saved as %s (SHA-256 checked)", e.Name, e.Peer, e.File)
		}
	case client.FileFailedEvent:
		f := get(e.ID, e.Peer, e.Name, e.Direction == "send")
		f.state, f.reason = "failed", e.Reason
		m.setNotice(true, "%s: %s", e.Name, e.Reason)
	}
	return nil
}

// fileLines are the lines of the transfers under way (at most
// maxFileLines), each with a progress bar: "⇡ photo.jpg [█████░░░░░] 48%
// 12.1/25.2 MB · 6.0 MB/s · 2s left".
func (m *model) fileLines(w int) []string {
	var act []*fileInfo
	for _, f := range m.files {
		if f.state == "active" || f.out && f.state == "offered" {
			act = append(act, f)
		}
	}
	sort.Slice(act, func(i, j int) bool { return act[i].at.Before(act[j].at) })
	var out []string
	for i, f := range act {
		if i == maxFileLines {
			break
		}
		arrow := "⇣"
		if f.out {
			arrow = "⇡"
		}
		if f.state == "offered" {
			out = append(out, stDim.Render(fit(fmt.Sprintf(" %s %s → %s · waiting for %s to accept", arrow, f.name, f.peer, f.peer), w)))
			continue
		}
		pct := 0.0
		if f.size > 0 {
			pct = float64(f.bytes) / float64(f.size)
		}
		const barW = 16
		full := int(pct * barW)
		bar := strings.Repeat("█", full) + strings.Repeat("░", barW-full)
		s := fmt.Sprintf(" %s %s [%s] %3.0f%% %s/%s", arrow, f.name, bar, 100*pct, client.HumanBytes(f.bytes), client.HumanBytes(f.size))
		if f.rate > 0 {
			s += fmt.Sprintf(" · %s/s · %s left", client.HumanBytes(int64(f.rate)), (time.Duration(f.eta) * time.Second).Round(time.Second))
		} else {
			s += " · waiting for a path"
		}
		if f.path == "relay" {
			s += " · relayed"
		}
		out = append(out, fit(s, w))
	}
	return out
}

// typeWords is ", image/jpeg" (or nothing for an unknown type).
func typeWords(t string) string {
	if t == "" {
		return ""
	}
	return ", " + t
}
