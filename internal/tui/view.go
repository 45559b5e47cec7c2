package tui

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/proto"
)

var (
	stTitle    = lipgloss.NewStyle().Bold(true).Reverse(true)
	stBanner   = lipgloss.NewStyle().Bold(true).Reverse(true).Blink(true)
	stAlarm    = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9"))
	stDim      = lipgloss.NewStyle().Faint(true)
	stSelected = lipgloss.NewStyle().Reverse(true)
	stMe       = lipgloss.NewStyle().Foreground(lipgloss.Color("6"))
	stThem     = lipgloss.NewStyle().Foreground(lipgloss.Color("3")).Bold(true)
	stRead     = lipgloss.NewStyle().Foreground(lipgloss.Color("12"))
	stBad      = lipgloss.NewStyle().Foreground(lipgloss.Color("9"))
	stStatus   = lipgloss.NewStyle().Reverse(true)
)

const listWidth = 22

// fit pads or cuts plain text s to exactly w cells.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	n := lipgloss.Width(s)
	if n <= w {
		return s + strings.Repeat(" ", w-n)
	}
	var b strings.Builder
	used := 0
	for _, r := range s {
		rw := lipgloss.Width(string(r))
		if used+rw > w-1 {
			break
		}
		b.WriteRune(r)
		used += rw
	}
	b.WriteString("…")
	return b.String() + strings.Repeat(" ", max(0, w-used-1))
}

// wrap breaks plain text into lines of at most w cells.
func wrap(s string, w int) []string {
	if w < 4 {
		w = 4
	}
	out := strings.Split(lipgloss.NewStyle().Width(w).Render(s), "\n")
	for i := range out {
		out[i] = strings.TrimRight(out[i], " ")
	}
	return out
}

// bodyHeight is the height of the contact list and conversation panes.
func (m *model) bodyHeight() int {
	h := m.height - 4 // title, notice, input, status bar
	if m.banner() != "" {
		h--
	}
	h -= len(m.fileLines(80)) // transfers under way
	return max(3, h)
}

// banner is the line that stays on top whatever is scrolled: a ringing
// call, or a changed key.
func (m *model) banner() string {
	if m.ringing != "" {
		return fmt.Sprintf("☎  %s is calling  —  /answer or /decline", m.ringing)
	}
	for _, c := range m.contacts {
		if c.KeyChanged() {
			return fmt.Sprintf("⚠  %s's KEY CHANGED — refused until you /verify %s and /accept %s", c.Name, c.Name, c.Name)
		}
	}
	if f := m.offerFor(""); f != nil {
		return fmt.Sprintf("📎 %s offers %s (%s%s) — /accept or /decline", f.peer, f.name, client.HumanBytes(f.size), typeWords(f.typ))
	}
	return ""
}

func presenceGlyph(p proto.Presence, known bool) string {
	switch {
	case !known || p.Status == proto.StatusOffline:
		return "○"
	case p.Status == proto.StatusAway:
		return "◐"
	}
	return "●"
}

func (m *model) View() string {
	w := max(40, m.width)
	now := time.Now()
	var rows []string

	title := " parley · " + (&history.Contact{Name: m.cfg.Name, Display: m.display}).Label()
	conn := "● " + m.conn + " "
	if m.conn != "connected" {
		conn = "○ " + m.conn + " "
	}
	rows = append(rows, stTitle.Render(fit(title, w-lipgloss.Width(conn))+conn))
	if b := m.banner(); b != "" {
		st := stAlarm
		if m.ringing != "" {
			st = stBanner
		} else if strings.HasPrefix(b, "📎") {
			st = stSelected // a file offer: news, not an alarm
		}
		rows = append(rows, st.Render(fit(b, w)))
	}

	h := m.bodyHeight()
	left := m.contactLines(h, now)
	right := m.conversationLines(w-listWidth-1, h, now)
	for i := 0; i < h; i++ {
		rows = append(rows, left[i]+stDim.Render("│")+right[i])
	}

	for _, l := range m.fileLines(w) {
		rows = append(rows, l)
	}

	// Notice or typing line.
	note, bad := m.notice, m.noticeBad
	if m.current != "" && !m.typing[m.current].IsZero() {
		note, bad = m.current+" is typing…", false
	}
	if note == "" && m.call != nil && m.call.state == "connected" && m.cfg.AudioNote != "" {
		note = "🔈 " + m.cfg.AudioNote // why the person hears nothing
	}
	if bad {
		rows = append(rows, stBad.Render(fit(" "+note, w)))
	} else {
		rows = append(rows, stDim.Render(fit(" "+note, w)))
	}

	// Input line with a block cursor.
	prompt := "› "
	if m.current != "" {
		prompt = m.current + " › "
	}
	in := string(m.input[:m.cursor]) + "█" + string(m.input[m.cursor:])
	if m.secretFor != "" {
		prompt = "passphrase › "
		in = strings.Repeat("•", len(m.input)) + "█"
	}
	avail := w - lipgloss.Width(prompt)
	if r := []rune(in); lipgloss.Width(in) > avail {
		in = string(r[max(0, len(r)-avail):])
	}
	rows = append(rows, fit(prompt+in, w))
	rows = append(rows, stStatus.Render(fit(m.statusLine(now), w)))
	return strings.Join(rows, "\n")
}

func (m *model) statusLine(now time.Time) string {
	if k := m.call; k != nil {
		s := fmt.Sprintf(" ☎ %s · %s", k.peer, k.state)
		if k.state == "connected" {
			d := now.Sub(k.connectedAt).Round(time.Second)
			s += fmt.Sprintf(" %02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
			path := k.path
			if path == "relay" && k.via != "" {
				path = "relay via " + k.via
			}
			if path != "" {
				s += " · " + path
			}
			if k.rttMs > 0 {
				s += fmt.Sprintf(" · RTT %.1f ms · loss %.1f%%", k.rttMs, k.lossPct)
			} else {
				s += " · RTT … · loss …" // no stats yet
			}
		}
		if m.cfg.Muted != nil && m.cfg.Muted.Load() {
			s += " · MUTED"
		}
		if k.remoteMuted {
			s += " · " + k.peer + " muted"
		}

		if k.state == "ringing" && k.direction == "incoming" {
			return s + " · /answer or /decline"
		}
		return s + " · /hangup"
	}
	return " ? help · Tab next contact · PgUp/PgDn scroll · /quit"
}

// contactLines renders the contact list: two lines per contact.
func (m *model) contactLines(h int, now time.Time) []string {
	lines := make([]string, 0, h)
	lines = append(lines, stDim.Render(fit(" Contacts", listWidth)))
	if len(m.contacts) == 0 {
		lines = append(lines, stDim.Render(fit(" /add NAME to add", listWidth)))
	}
	for _, c := range m.contacts {
		p, known := m.presence[c.Name]
		// A display name goes on the first line, the handle always on the
		// second, where a long display name cannot push it out of view.
		shown := c.Name
		if c.Display != "" {
			shown = c.Display
		}
		line1 := fmt.Sprintf(" %s %s", presenceGlyph(p, known), shown)
		if n := m.unread[c.Name]; n > 0 && c.Name != m.current {
			line1 = fit(line1, listWidth-5) + fmt.Sprintf("%4d ", n)
		}
		var line2 string
		switch {
		case c.KeyChanged():
			line2 = "   ⚠ KEY CHANGED"
		case known && p.Status == proto.StatusOnline:
			line2 = "   online"
		case known && p.Status == proto.StatusAway:
			line2 = "   away"
		default:
			seen := c.LastSeen
			if known && p.LastSeen > seen {
				seen = p.LastSeen
			}
			line2 = "   " + fmtAgo(seen, now)
		}
		if c.Verified && !c.KeyChanged() {
			line2 += " ✔"
		}
		if c.Blocked {
			line2 = "   ⊘ blocked"
		}
		if c.Display != "" {
			line2 = "   " + c.Name + " ·" + line2[2:]
		}
		l1, l2 := fit(line1, listWidth), fit(line2, listWidth)
		switch {
		case c.Name == m.current:
			l1, l2 = stSelected.Render(l1), stSelected.Render(l2)
		case c.KeyChanged():
			l2 = stAlarm.Render(l2)
		default:
			l2 = stDim.Render(l2)
		}
		lines = append(lines, l1, l2)
	}
	// Online here: people online on this server who are not contacts yet,
	// in the room the contacts leave (/who lists everyone).
	if others := m.onlineHere(false); len(others) > 0 && len(lines)+3 <= h {
		lines = append(lines, strings.Repeat(" ", listWidth), stDim.Render(fit(" Online here · /add", listWidth)))
		room := h - len(lines)
		for i, name := range others {
			if i == room-1 && len(others) > room {
				lines = append(lines, stDim.Render(fit(fmt.Sprintf("   +%d more · /who", len(others)-i), listWidth)))
				break
			}
			lines = append(lines, fit(fmt.Sprintf(" %s %s", presenceGlyph(m.presence[name], true), name), listWidth))
		}
	}
	for len(lines) < h {
		lines = append(lines, strings.Repeat(" ", listWidth))
	}
	if len(lines) > h { // keep the selected contact visible
		sel := 0
		for i, c := range m.contacts {
			if c.Name == m.current {
				sel = 1 + 2*i
			}
		}
		start := min(max(0, sel-h+3), len(lines)-h)
		lines = append(lines[:1:1], lines[1+start:start+h]...)
	}
	return lines
}

func tick4(st history.Status) string {
	switch st {
	case history.Sending:
		return " ·"
	case history.Stored:
		return " ✓"
	case history.Delivered:
		return " ✓✓"
	case history.Read:
		return " ✓✓ read"
	case history.Failed:
		return " ✗ not sent"
	}
	return ""
}

// conversationLines renders the open conversation (or an overlay).
func (m *model) conversationLines(w, h int, now time.Time) []string {
	out := make([]string, 0, h)
	pad := func(s string) string { return " " + fit(s, w-1) }
	if m.overlay != "" {
		text := helpText
		switch m.overlay {
		case "verify":
			text = m.verifyText(m.verifyWith)
		case "who":
			text = m.whoText()
		}
		for _, l := range strings.Split(text, "\n") {
			for _, x := range wrap(l, w-2) {
				out = append(out, pad(x))
			}
		}
		// Longer than the screen: PgUp/PgDn scroll it, and the last row
		// says there is more.
		if len(out) > h {
			m.overlayScroll = min(m.overlayScroll, len(out)-h+1)
			out = out[m.overlayScroll:]
			if len(out) > h {
				out = append(out[:h-1], pad(stDim.Render("↓ more: PgDn")))
			}
		}
		for len(out) < h {
			out = append(out, pad(""))
		}
		return out[:h]
	}
	if m.current == "" {
		out = append(out, pad("No conversation open."), pad(""), pad("/add NAME adds a contact; Tab moves between them."), pad("Press ? for help."))
		for len(out) < h {
			out = append(out, pad(""))
		}
		return out
	}
	c, _ := m.contact(m.current)
	p, known := m.presence[m.current]
	head := c.Label()
	if c.Name == "" {
		head = m.current
	}
	switch {
	case c.KeyChanged():
		head += " · ⚠ KEY CHANGED — messages held"
	case known && p.Online():
		head += " · " + string(p.Status)
	default:
		head += " · " + fmtAgo(c.LastSeen, now)
	}
	if c.Blocked {
		head += " · blocked (/unblock " + m.current + ")"
	}
	if c.Verified && !c.KeyChanged() {
		head += " · verified ✔"
	} else if c.Key != "" && !c.KeyChanged() {
		head += " · key pinned"
	}
	headLine := pad(head)
	if c.KeyChanged() {
		headLine = stAlarm.Render(headLine)
	} else {
		headLine = stDim.Render(headLine)
	}

	var lines []string
	var day string
	for _, msg := range m.msgs {
		at := time.UnixMilli(msg.At)
		if msg.Out && msg.Time != 0 {
			at = time.UnixMilli(msg.Time)
		}
		if d := at.Format("Mon 2 Jan 2006"); d != day {
			day = d
			lines = append(lines, stDim.Render(pad("── "+d+" ──")))
		}
		stamp := at.Format("15:04")
		if msg.Call {
			// A line of the call log, not anyone's words.
			st := stDim
			if msg.Missed {
				st = stBad
			}
			for i, l := range wrap(stamp+" "+msg.Text, w-2) {
				if i == 0 {
					l = strings.TrimPrefix(l, stamp+" ")
					lines = append(lines, " "+stDim.Render(stamp)+" "+st.Render(fit(l, w-len(stamp)-2)))
				} else {
					lines = append(lines, st.Render(pad(l)))
				}
			}
			continue
		}
		who, st := m.current, stThem
		if msg.Out {
			who, st = "me", stMe
		}
		text := msg.Text
		if msg.Held && c.KeyChanged() {
			text = "⚠ message held: the sender's key changed (/accept " + m.current + ")"
		}
		prefix := stamp + " " + who + ": "
		body := wrap(prefix+text+tick4(msg.Status), w-2)
		for i, l := range body {
			rendered := pad(l)
			if i == 0 {
				rest := strings.TrimPrefix(fit(l, w-1), stamp+" "+who+":")
				rendered = " " + stDim.Render(stamp) + " " + st.Render(who+":") + rest
				if msg.Status == history.Read {
					rendered = strings.Replace(rendered, "✓✓ read", stRead.Render("✓✓ read"), 1)
				}
			}
			lines = append(lines, rendered)
		}
	}
	avail := h - 1
	end := len(lines) - m.scroll
	if end < avail {
		end = min(len(lines), avail)
		m.scroll = max(0, len(lines)-end)
	}
	start := max(0, end-avail)
	out = append(out, headLine)
	for i := end - start; i < avail; i++ { // the newest line sits at the bottom
		out = append(out, pad(""))
	}
	out = append(out, lines[start:end]...)
	if m.scroll > 0 && len(out) > 1 {
		out[len(out)-1] = stDim.Render(pad(fmt.Sprintf("── %d more lines below (PgDn, End) ──", m.scroll)))
	}
	for len(out) < h {
		out = append(out, pad(""))
	}
	return out
}

// onlineHere is who the server says is online (or away) besides us,
// sorted; contacts only when withContacts.
func (m *model) onlineHere(withContacts bool) []string {
	var on []string
	for name, p := range m.presence {
		if name == m.cfg.Name || !p.Online() {
			continue
		}
		if _, isContact := m.contact(name); isContact && !withContacts {
			continue
		}
		on = append(on, name)
	}
	sort.Strings(on)
	return on
}

// whoText lists who is online on this server (as far as the server tells
// us), contacts first marked, with how to add the others.
func (m *model) whoText() string {
	on := m.onlineHere(true)
	if len(on) == 0 {
		return "Online on this server\n\n  nobody else right now\n\nEsc closes this list."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Online on this server (%d)\n\n", len(on))
	for _, name := range on {
		mark := "  "
		if _, ok := m.contact(name); ok {
			mark = "★ "
		}
		st := string(m.presence[name].Status)
		fmt.Fprintf(&b, "  %s%s · %s\n", mark, name, st)
	}
	b.WriteString("\n★ a contact. /add NAME adds one; Esc closes this list.")
	return b.String()
}
