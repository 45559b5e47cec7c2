package tui

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/proto"
)

// helpText is the help overlay ('?' on an empty input line, or /help).
const helpText = `Keys
  Enter       send the line, or run a /command
  Tab, S-Tab  next / previous contact (Ctrl-N, Ctrl-P)
  PgUp, PgDn  scroll (this help too); End: newest
  Up, Down    input history
  Esc         close this help        Ctrl-C  quit
Contacts
  /add NAME       add a contact (key pinned)
  /block NAME     refuse their messages and calls
  /unblock NAME   let them in again
  /who            who is online on this server
  /nick [NAME]    your display name, beside your handle
  /away, /back    set your status
Calls
  /call [NAME]    call (the open conversation)
  /answer         answer the ringing call
  /decline        refuse it
  /hangup         end the call
  /mute           mute or unmute
Safety
  /verify [NAME]  the safety number to compare
  /verified NAME  mark the number as compared
  /accept NAME    accept a changed key
Files
  /backup FILE    back up your key (passphrase);
                  restore: parley key import
  /send PATH      offer a file (peer to peer)
  /accept         take a file offered to you
  /decline        refuse it
  /quit           leave
Ticks
  · sending   ✓ waiting on the server (offline)
  ✓✓ delivered   ✓✓ read`

func (m *model) onKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.Type {
	case tea.KeyCtrlC:
		return m, tea.Quit
	case tea.KeyEsc:
		m.overlay = ""
		if m.secretFor != "" {
			m.secretFor, m.secretFirst, m.secretAgain = "", "", false
			m.setInput("")
			m.setNotice(false, "backup cancelled")
		}
		return m, nil
	case tea.KeyTab, tea.KeyCtrlN:
		return m, m.cycle(1)
	case tea.KeyShiftTab, tea.KeyCtrlP:
		return m, m.cycle(-1)
	case tea.KeyPgUp:
		if m.overlay != "" {
			m.overlayScroll = max(0, m.overlayScroll-max(1, m.bodyHeight()-2))
			return m, nil
		}
		m.scroll += max(1, m.bodyHeight()-2)
		return m, nil
	case tea.KeyPgDown:
		if m.overlay != "" {
			m.overlayScroll += max(1, m.bodyHeight()-2) // clamped when drawn
			return m, nil
		}
		m.scroll = max(0, m.scroll-max(1, m.bodyHeight()-2))
		if m.scroll == 0 {
			return m, m.markRead()
		}
		return m, nil
	case tea.KeyEnd:
		m.scroll = 0
		return m, m.markRead()
	case tea.KeyUp:
		if len(m.hist) > 0 {
			if m.histIdx < 0 {
				m.histIdx = len(m.hist)
			}
			m.histIdx = max(0, m.histIdx-1)
			m.setInput(m.hist[m.histIdx])
		}
		return m, nil
	case tea.KeyDown:
		if m.histIdx >= 0 {
			m.histIdx++
			if m.histIdx >= len(m.hist) {
				m.histIdx = -1
				m.setInput("")
			} else {
				m.setInput(m.hist[m.histIdx])
			}
		}
		return m, nil
	case tea.KeyLeft:
		m.cursor = max(0, m.cursor-1)
		return m, nil
	case tea.KeyRight:
		m.cursor = min(len(m.input), m.cursor+1)
		return m, nil
	case tea.KeyHome, tea.KeyCtrlA:
		m.cursor = 0
		return m, nil
	case tea.KeyCtrlE:
		m.cursor = len(m.input)
		return m, nil
	case tea.KeyCtrlU:
		m.setInput("")
		return m, m.sendTyping(false)
	case tea.KeyBackspace:
		if m.cursor > 0 {
			m.input = append(m.input[:m.cursor-1], m.input[m.cursor:]...)
			m.cursor--
		}
		if len(m.input) == 0 {
			return m, m.sendTyping(false)
		}
		return m, nil
	case tea.KeyEnter:
		if m.secretFor != "" {
			// The passphrase of a key backup: never echoed, never in
			// history, typed twice (unseen, a typo would lock the backup).
			path, pass := m.secretFor, string(m.input)
			m.setInput("")
			if !m.secretAgain {
				m.secretFirst, m.secretAgain = pass, true
				m.setNotice(false, "type the passphrase again (not shown), Enter; Esc cancels")
				return m, nil
			}
			first := m.secretFirst
			m.secretFor, m.secretFirst, m.secretAgain = "", "", false
			if pass != first {
				m.setNotice(true, "the two passphrases differ: nothing written (/backup %s to try again)", path)
				return m, nil
			}
			return m, m.do("backup to "+path, func() error { return m.cfg.Backup(path, pass) })
		}
		line := strings.TrimSpace(string(m.input))
		m.setInput("")
		m.histIdx = -1
		if line == "" {
			return m, nil
		}
		if len(m.hist) == 0 || m.hist[len(m.hist)-1] != line {
			m.hist = append(m.hist, line)
			if len(m.hist) > 200 {
				m.hist = m.hist[1:]
			}
		}
		typ := m.sendTyping(false)
		if strings.HasPrefix(line, "/") {
			return m, tea.Batch(typ, m.command(line))
		}
		return m, tea.Batch(typ, m.send(line))
	case tea.KeyRunes, tea.KeySpace:
		r := k.Runes
		if k.Type == tea.KeySpace {
			r = []rune{' '}
		}
		if len(m.input) == 0 && len(r) == 1 && r[0] == '?' {
			m.toggleOverlay("help")
			return m, nil
		}
		m.input = append(m.input[:m.cursor], append(append([]rune(nil), r...), m.input[m.cursor:]...)...)
		m.cursor += len(r)
		if !strings.HasPrefix(string(m.input), "/") {
			return m, m.sendTyping(true)
		}
	}
	return m, nil
}

func (m *model) setInput(s string) {
	m.input = []rune(s)
	m.cursor = len(m.input)
}

func (m *model) toggleOverlay(o string) {
	m.overlayScroll = 0
	if m.overlay == o {
		m.overlay = ""
	} else {
		m.overlay = o
	}
}

// cycle selects the next (or previous) contact.
func (m *model) cycle(d int) tea.Cmd {
	if len(m.contacts) == 0 {
		return nil
	}
	i := 0
	for j, c := range m.contacts {
		if c.Name == m.current {
			i = (j + d + len(m.contacts)) % len(m.contacts)
		}
	}
	m.overlay = ""
	return tea.Batch(m.sendTyping(false), m.selectPeer(m.contacts[i].Name))
}

// refuseChanged says why nothing goes to a contact whose key changed.
func (m *model) refuseChanged(peer string) bool {
	if c, ok := m.contact(peer); ok && c.KeyChanged() {
		m.setNotice(true, "refused: %s's key changed; compare safety numbers (/verify %s), then /accept %s", peer, peer, peer)
		return true
	}
	return false
}

func (m *model) send(text string) tea.Cmd {
	peer := m.current
	if peer == "" {
		m.setNotice(true, "no conversation open: /add NAME first")
		return nil
	}
	if m.refuseChanged(peer) {
		return nil
	}
	if err := proto.ValidateText(text); err != nil {
		m.setNotice(true, "%v", err)
		return nil
	}
	m.scroll = 0
	return func() tea.Msg {
		ts := time.Now().UnixMilli()
		id, err := m.c.Send(m.ctx, peer, text)
		return sentMsg{peer: peer, id: id, text: text, ts: ts, err: err}
	}
}

// do runs f in the background and reports its error as "what: err".
func (m *model) do(what string, f func() error) tea.Cmd {
	return func() tea.Msg { return doneMsg{what: what, err: f()} }
}

func (m *model) command(line string) tea.Cmd {
	cmd, arg := trimCmd(line)
	peer := m.current
	if arg != "" {
		peer = strings.ToLower(strings.Fields(arg)[0])
	}
	m.notice = ""
	switch cmd {
	case "/quit", "/q":
		return tea.Quit
	case "/help", "/?":
		m.toggleOverlay("help")
	case "/who":
		m.toggleOverlay("who")
	case "/block", "/unblock":
		if arg == "" {
			m.setNotice(true, "usage: %s NAME", cmd)
			return nil
		}
		on := cmd == "/block"
		if err := m.db.SetBlocked(peer, on); err != nil {
			m.setNotice(true, "%v", err)
			return nil
		}
		m.reloadContacts()
		if on {
			m.setNotice(false, "blocked %s: their messages and calls are refused (/unblock %s)", peer, peer)
			if m.call != nil && m.call.peer == peer {
				return m.do("hang up", func() error { return m.c.Hangup(m.ctx, peer) })
			}
		} else {
			m.setNotice(false, "unblocked %s", peer)
		}
	case "/nick":
		if m.cfg.SetDisplayName == nil {
			m.setNotice(true, "display names are not available here")
			return nil
		}
		if err := m.cfg.SetDisplayName(arg); err != nil {
			m.setNotice(true, "%v", err)
			return nil
		}
		m.display = arg
		if arg == "" {
			m.setNotice(false, "display name cleared: people see your handle, %s", m.cfg.Name)
		} else {
			m.setNotice(false, "people you write to now see %q beside your handle, %s", arg, m.cfg.Name)
		}
	case "/backup":
		if arg == "" {
			m.setNotice(true, "usage: /backup FILE (then type a passphrase)")
			return nil
		}
		if m.cfg.Backup == nil {
			m.setNotice(true, "key backups are not available here")
			return nil
		}
		m.secretFor = strings.TrimSpace(arg)
		m.setNotice(false, "type a passphrase (not shown, 8+ characters), Enter; Esc cancels")
	case "/add":
		if arg == "" {
			m.setNotice(true, "usage: /add NAME")
			return nil
		}
		if peer == m.cfg.Name {
			m.setNotice(true, "that is you")
			return nil
		}
		if _, err := m.db.AddContact(peer); err != nil {
			m.setNotice(true, "%v", err)
			return nil
		}
		m.reloadContacts()
		var keyCmd tea.Cmd
		if p, ok := m.presence[peer]; ok && p.PublicKey != "" {
			keyCmd = m.observeKey(peer, p.PublicKey)
		}
		// The server sends presence for contacts only: ask for this one.
		// Its answer arrives before the acknowledgement, so a name the
		// client still has no presence for is one nobody has here: it is
		// added (they may sign up later), but a typo does not pass silently.
		m.setNotice(false, "added %s", peer)
		watch := func() tea.Msg {
			err := m.c.AddContacts(m.ctx, peer)
			if err != nil {
				return doneMsg{what: "add " + peer, err: err}
			}
			ps, err := m.c.Presence(m.ctx)
			if err != nil {
				return doneMsg{what: "add " + peer, err: err}
			}
			for _, p := range ps {
				if p.Name == peer {
					return nil
				}
			}
			return noticeMsg{warn: true, text: fmt.Sprintf("added %s, but nobody of that name is known on this server yet (check the spelling)", peer)}
		}
		return tea.Batch(keyCmd, m.selectPeer(peer), watch)
	case "/call":
		if peer == "" {
			m.setNotice(true, "usage: /call NAME")
			return nil
		}
		if m.refuseChanged(peer) {
			return nil
		}
		return m.do("call "+peer, func() error { return m.c.Call(m.ctx, peer) })
	case "/answer":
		if m.ringing == "" {
			m.setNotice(true, "nobody is calling")
			return nil
		}
		who := m.ringing
		if m.refuseChanged(who) {
			return nil
		}
		return tea.Batch(m.selectPeer(who), m.do("answer", func() error { return m.c.Answer(m.ctx, who) }))
	case "/decline":
		if m.ringing == "" {
			if f := m.offerFor(arg); f != nil {
				return m.declineFile(f)
			}
			m.setNotice(true, "nobody is calling and no file is offered")
			return nil
		}
		who := m.ringing
		return m.do("decline", func() error { return m.c.Decline(m.ctx, who) })
	case "/hangup":
		if m.call == nil {
			m.setNotice(true, "no call to hang up")
			return nil
		}
		who := m.call.peer
		return m.do("hangup", func() error { return m.c.Hangup(m.ctx, who) })
	case "/mute":
		if m.cfg.Muted == nil {
			m.setNotice(true, "muting is not available")
			return nil
		}
		on := !m.cfg.Muted.Load()
		m.cfg.Muted.Store(on)
		if on {
			m.setNotice(false, "microphone muted")
		} else {
			m.setNotice(false, "microphone on")
		}
		if k := m.call; k != nil {
			peer := k.peer // the peer shows that we are muted
			return func() tea.Msg { m.c.SetMuted(m.ctx, peer, on); return nil }
		}
	case "/verify":
		if peer == "" {
			m.setNotice(true, "usage: /verify NAME")
			return nil
		}
		if _, ok := m.contact(peer); !ok {
			m.setNotice(true, "%s is not a contact: /add %s", peer, peer)
			return nil
		}
		m.verifyWith = peer
		m.overlay = "verify"
	case "/verified":
		if err := m.db.SetVerified(peer, true); err != nil {
			m.setNotice(true, "%v", err)
			return nil
		}
		m.reloadContacts()
		m.setNotice(false, "%s marked as verified", peer)
	case "/send":
		return m.sendFile(arg) // files.go
	case "/accept":
		if c, ok := m.contact(peer); !ok || !c.KeyChanged() {
			if f := m.offerFor(arg); f != nil {
				return m.acceptFile(f)
			}
		}
		if err := m.db.AcceptKey(peer); err != nil {
			m.setNotice(true, "%v", err)
			return nil
		}
		m.reloadContacts()
		m.setNotice(false, "accepted the new key of %s; held messages are shown", peer)
		return m.selectPeer(peer)
	case "/away":
		return m.do("away", func() error { return m.c.SetStatus(m.ctx, proto.StatusAway) })
	case "/back":
		return m.do("back", func() error { return m.c.SetStatus(m.ctx, proto.StatusOnline) })
	default:
		m.setNotice(true, "unknown command %s; press ? for help", cmd)
	}
	return nil
}

// verifyText is the safety-number overlay for a contact.
func (m *model) verifyText(name string) string {
	c, _ := m.contact(name)
	if c.Key == "" {
		return fmt.Sprintf("No key is known for %s yet: it is pinned the first time\n%s is seen online.", name, name)
	}
	var b strings.Builder
	key := c.Key
	if c.KeyChanged() {
		key = c.PendingKey
		fmt.Fprintf(&b, "⚠ %s's key CHANGED: number for the NEW key.\n\n", name)
	}
	theirs, _ := base64.StdEncoding.DecodeString(key)
	num := history.SafetyNumber(m.cfg.Name, m.cfg.Key, name, theirs)
	g := strings.Fields(num)
	fmt.Fprintf(&b, "Safety number with %s:\n\n", name)
	for i := 0; i < len(g); i += 4 {
		fmt.Fprintf(&b, "    %s\n", strings.Join(g[i:min(i+4, len(g))], " "))
	}
	fmt.Fprintf(&b, "\nCompare it with %s's screen (/verify %s there),\nin person or on a call.", name, m.cfg.Name)
	if c.KeyChanged() {
		fmt.Fprintf(&b, " If they match: /accept %s", name)
	} else {
		fmt.Fprintf(&b, " If they match: /verified %s", name)
	}
	b.WriteString("\nEsc closes this.")
	return b.String()
}
