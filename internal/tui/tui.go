// Package tui is the terminal user interface of `parley chat`: a contact
// list with presence and unread counts, conversations with scrollback and
// delivery/read ticks, typing indicators, calls with a ringing banner and a
// status bar showing the media path, RTT and loss, and trust-on-first-use
// contact keys with safety numbers. It is a bubbletea program over a
// running client.Client and the profile's history.DB.
package tui

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/proto"
)

// Client is what the TUI needs of a client.Client.
type Client interface {
	Events() <-chan client.Event
	Send(ctx context.Context, peer, text string) (string, error)
	Call(ctx context.Context, peer string) error
	Answer(ctx context.Context, peer string) error
	Decline(ctx context.Context, peer string) error
	Hangup(ctx context.Context, peer string) error
	SetMuted(ctx context.Context, peer string, muted bool) error
	SetStatus(ctx context.Context, st proto.Status) error
	MarkRead(ctx context.Context, peer string, ids ...string) error
	SetTyping(ctx context.Context, peer string, typing bool) error
	SendFile(ctx context.Context, peer, path string) (string, error)
	AcceptFile(ctx context.Context, id string) error
	DeclineFile(ctx context.Context, id, reason string) error
	AddContacts(ctx context.Context, names ...string) error
	Presence(ctx context.Context) ([]proto.Presence, error)
}

// Config configures the TUI.
type Config struct {
	// Client is the running client. Required.
	Client Client
	// History is the open profile history. Required.
	History *history.DB
	// Name and Key are our own, for the title and safety numbers. Required.
	Name string
	Key  ed25519.PublicKey
	// Muted is the microphone switch that /mute flips (see Muteable).
	// Nil makes /mute say that muting is unavailable.
	Muted *atomic.Bool
	// In and Out are the terminal. Nil means stdin and stdout.
	In  io.Reader
	Out io.Writer
	// AltScreen runs full-window in the terminal's alternate screen.
	AltScreen bool
	// Backup, when set, writes a backup of our keys to path under
	// passphrase (/backup; client.ExportKeys).
	Backup func(path, passphrase string) error
	// DisplayName is ours as the session starts (shown in the title);
	// SetDisplayName, when set, changes it for the next messages and keeps
	// it (/nick; client.SetDisplayName and the profile).
	DisplayName    string
	SetDisplayName func(string) error
	// AudioNote, when set, is shown above the input line during a
	// connected call: what calls send and do with what they receive when that is
	// not a sound device ("test tone out, incoming audio discarded").
	AudioNote string
}

// Run runs the TUI until the user quits or ctx is done.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil || cfg.History == nil || cfg.Name == "" {
		return fmt.Errorf("%w: Client, History and Name are required", ErrBadConfig)
	}
	if cfg.In == nil {
		cfg.In = os.Stdin
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	m := newModel(ctx, cfg)
	opts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithInput(cfg.In), tea.WithOutput(cfg.Out)}
	if cfg.AltScreen {
		opts = append(opts, tea.WithAltScreen())
	}
	_, err := tea.NewProgram(m, opts...).Run()
	if err == tea.ErrProgramKilled && ctx.Err() != nil {
		return nil
	}
	return err
}

// Muteable wraps src so that it sends silence while muted is set.
func Muteable(src audio.Source, muted *atomic.Bool) audio.Source {
	return &muteSource{src: src, muted: muted}
}

type muteSource struct {
	src   audio.Source
	muted *atomic.Bool
}

func (m *muteSource) Next() ([]byte, time.Duration, error) {
	pkt, dur, err := m.src.Next()
	if err == nil && m.muted.Load() {
		return audio.Silence{}.Next()
	}
	return pkt, dur, err
}

// Messages the program passes itself.
type (
	eventMsg  struct{ ev client.Event }
	closedMsg struct{}
	tickMsg   time.Time
	sentMsg   struct {
		peer, id, text string
		ts             int64
		err            error
	}
	// noticeMsg is a line for the notice bar from a command's work.
	noticeMsg struct {
		warn bool
		text string
	}
	doneMsg struct {
		what string
		err  error
	}
)

func waitEvent(ch <-chan client.Event) tea.Cmd {
	return func() tea.Msg {
		ev, ok := <-ch
		if !ok {
			return closedMsg{}
		}
		return eventMsg{ev}
	}
}

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// callInfo is the call in progress, if any.
type callInfo struct {
	peer, state, direction string
	path, via              string
	rttMs, lossPct         float64
	remoteMuted            bool // the peer muted its microphone (MuteEvent)
	connectedAt            time.Time
}

// model is the whole UI state; bubbletea owns it (Update and View run on
// one goroutine).
type model struct {
	ctx context.Context
	cfg Config
	c   Client
	db  *history.DB

	width, height int

	contacts []history.Contact
	unread   map[string]int
	presence map[string]proto.Presence
	current  string
	msgs     []history.Message
	scroll   int // lines scrolled up from the bottom

	input    []rune
	cursor   int
	hist     []string
	histIdx  int
	typingTo string
	typedAt  time.Time

	conn           string
	call           *callInfo
	ringing        string
	typing         map[string]time.Time
	early          map[string]history.Status // receipts that beat the sentMsg
	notice         string
	noticeBad      bool
	noticeAt       time.Time
	disconnectNote string            // the notice saying why the server is out of reach, cleared on sign-in
	overlay        string            // "help", "verify", "who" or ""
	overlayScroll  int               // first line of the overlay shown (PgUp/PgDn)
	display        string            // our display name (/nick)
	secretFor      string            // the file a passphrase is being typed for (/backup); the input is masked
	secretFirst    string            // the passphrase as typed the first time, while it is typed again
	secretAgain    bool              // the passphrase is being typed the second time
	drafts         map[string][]rune // unsent input of the conversations not open
	verifyWith     string
	files          map[string]*fileInfo // transfers this session saw (files.go)
}

func newModel(ctx context.Context, cfg Config) *model {
	m := &model{
		ctx: ctx, cfg: cfg, c: cfg.Client, db: cfg.History,
		width: 80, height: 24,
		unread:   map[string]int{},
		presence: map[string]proto.Presence{},
		typing:   map[string]time.Time{},
		early:    map[string]history.Status{},
		files:    map[string]*fileInfo{},
		drafts:   map[string][]rune{},
		conn:     "connecting…",
		histIdx:  -1,
		display:  cfg.DisplayName,
	}
	// The client sends again, under their ids, the messages the last
	// session handed over without a receipt (the history is its outbox);
	// receivers drop ones they already have.
	if unsent, err := m.db.Unsent(); err == nil && len(unsent) > 0 {
		m.setNotice(false, "%d message(s) from the last session are being sent again", len(unsent))
	}
	m.reloadContacts()
	if len(m.contacts) > 0 {
		m.selectPeer(m.contacts[0].Name)
	}
	return m
}

func (m *model) Init() tea.Cmd {
	return tea.Batch(waitEvent(m.c.Events()), tick(), tea.SetWindowTitle("parley · "+m.cfg.Name))
}

func (m *model) reloadContacts() {
	cs, err := m.db.Contacts()
	if err != nil {
		m.setNotice(true, "history: %v", err)
		return
	}
	m.contacts = cs
	for _, c := range cs {
		m.unread[c.Name] = m.db.Unread(c.Name)
	}
}

func (m *model) reloadMessages() {
	if m.current == "" {
		m.msgs = nil
		return
	}
	msgs, err := m.db.Messages(m.current, 500)
	if err != nil {
		m.setNotice(true, "history: %v", err)
		return
	}
	m.msgs = msgs
}

func (m *model) contact(name string) (history.Contact, bool) {
	for _, c := range m.contacts {
		if c.Name == name {
			return c, true
		}
	}
	return history.Contact{}, false
}

// selectPeer opens the conversation with name and marks it read.
func (m *model) selectPeer(name string) tea.Cmd {
	if name != m.current {
		// Each conversation keeps its own draft: it never follows you.
		if m.current != "" && m.secretFor == "" {
			if len(m.input) > 0 {
				m.drafts[m.current] = append([]rune(nil), m.input...)
			} else {
				delete(m.drafts, m.current)
			}
		}
		if m.secretFor == "" {
			m.setInput(string(m.drafts[name]))
		}
		m.scroll = 0
		m.current = name
	}
	m.reloadMessages()
	return m.markRead()
}

// markRead moves the read mark of the open conversation and sends read
// receipts for what it passed.
func (m *model) markRead() tea.Cmd {
	if m.current == "" {
		return nil
	}
	ids, err := m.db.MarkRead(m.current)
	m.unread[m.current] = m.db.Unread(m.current)
	if err != nil || len(ids) == 0 {
		return nil
	}
	peer := m.current
	if p, ok := m.presence[peer]; !ok || !p.Online() {
		return nil
	}
	return func() tea.Msg {
		m.c.MarkRead(m.ctx, peer, ids...) // best effort: a lost read receipt only leaves "delivered"
		return nil
	}
}

func (m *model) setNotice(bad bool, format string, args ...any) {
	m.notice = fmt.Sprintf(format, args...)
	m.noticeBad, m.noticeAt = bad, time.Now()
}

// bell rings the terminal bell (an incoming call, a changed key).
func (m *model) bell() tea.Cmd {
	out := m.cfg.Out
	return func() tea.Msg {
		io.WriteString(out, "\a")
		return nil
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tea.KeyMsg:
		return m.onKey(msg)
	case eventMsg:
		cmd := m.onEvent(msg.ev)
		return m, tea.Batch(cmd, waitEvent(m.c.Events()))
	case closedMsg:
		m.conn = "closed"
		return m, tea.Quit
	case tickMsg:
		now := time.Time(msg)
		for p, at := range m.typing {
			if now.Sub(at) > 6*time.Second {
				delete(m.typing, p)
			}
		}
		if m.notice != "" && now.Sub(m.noticeAt) > 10*time.Second {
			m.notice = "" // notices fade; the key-change banner does not
		}
		var cmd tea.Cmd
		if m.typingTo != "" && now.Sub(m.typedAt) > 5*time.Second {
			cmd = m.sendTyping(false)
		}
		return m, tea.Batch(cmd, tick())
	case sentMsg:
		if msg.err != nil {
			m.setNotice(true, "not sent to %s: %v", msg.peer, msg.err)
			return m, nil
		}
		// The client queued it in the history (its outbox) before Send
		// returned; receipts may have come first.
		if st, ok := m.early[msg.id]; ok {
			delete(m.early, msg.id)
			m.db.SetStatus(msg.peer, msg.id, st)
		}
		if msg.peer == m.current {
			m.reloadMessages()
			m.scroll = 0
		}
		return m, nil
	case noticeMsg:
		m.setNotice(msg.warn, "%s", msg.text)
		return m, nil
	case doneMsg:
		if msg.err != nil {
			m.setNotice(true, "%s: %v", msg.what, msg.err)
		} else if path, ok := strings.CutPrefix(msg.what, "backup to "); ok {
			m.setNotice(false, "your key is backed up in %s (restore: parley key import --in FILE)", path)
		}
		return m, nil
	case fileSentMsg:
		m.onFileSent(msg) // files.go
		return m, nil
	}
	return m, nil
}

// setStatus moves an outgoing message's status, remembering receipts that
// arrive before the message is in the history.
func (m *model) setStatus(peer, id string, st history.Status) {
	changed, err := m.db.SetStatus(peer, id, st)
	if err == nil && !changed {
		if _, ok := m.findMsg(peer, id); !ok {
			m.early[id] = st
		}
	}
	if peer == m.current {
		m.reloadMessages()
	}
}

func (m *model) findMsg(peer, id string) (history.Message, bool) {
	msgs, _ := m.db.Messages(peer, 500)
	for _, x := range msgs {
		if x.Out && x.ID == id {
			return x, true
		}
	}
	return history.Message{}, false
}

func (m *model) onEvent(ev client.Event) tea.Cmd {
	switch e := ev.(type) {
	case client.ReadyEvent:
		m.conn = "connected"
		if m.notice != "" && m.notice == m.disconnectNote {
			m.notice = "" // the reason no longer holds
		}
		m.disconnectNote = ""
		if e.Reconnect {
			m.setNotice(false, "reconnected")
		}
	case client.DisconnectedEvent:
		m.conn = "offline · retry in " + e.Retry
		if e.Err != nil {
			m.setNotice(true, "%s", disconnectWords(e.Err))
			m.disconnectNote = m.notice
		}
	case client.PresenceEvent:
		return m.onPresence(e.Presence)
	case client.MessageEvent:
		m.reloadContacts()
		delete(m.typing, e.From)
		if m.current == "" {
			return m.selectPeer(e.From)
		}
		if e.From == m.current {
			m.reloadMessages()
			if m.scroll == 0 {
				return m.markRead()
			}
		}
		m.unread[e.From] = m.db.Unread(e.From)
	case client.StoredEvent:
		m.setStatus(e.To, e.ID, history.Stored)
	case client.DeliveredEvent:
		m.setStatus(e.To, e.ID, history.Delivered)
	case client.ReadEvent:
		m.setStatus(e.By, e.ID, history.Read)
	case client.TypingEvent:
		if e.Typing {
			m.typing[e.From] = time.Now()
		} else {
			delete(m.typing, e.From)
		}
	case client.CallEvent:
		return m.onCall(e)
	case client.MuteEvent:
		if m.call != nil && m.call.peer == e.With {
			m.call.remoteMuted = e.Muted
		}
	case client.StatsEvent:
		if m.call != nil && m.call.peer == e.With {
			m.call.rttMs = e.RTTms
			if n := float64(e.PacketsLost) + float64(e.RTPPacketsReceived); n > 0 && e.PacketsLost > 0 {
				m.call.lossPct = 100 * float64(e.PacketsLost) / n
			}
			if e.Path != "" {
				m.call.path, m.call.via = e.Path, e.Via // the path can change mid-call
			}
		}
	case client.FileOfferEvent, client.FileProgressEvent, client.FileDoneEvent, client.FileFailedEvent:
		return m.onFileEvent(e) // files.go
	case client.ErrorEvent:
		if e.Err.Code == proto.CodeShuttingDown || e.Err.Code == proto.CodeReplaced {
			return nil
		}
		if e.Ref != "" {
			for _, c := range m.contacts {
				if _, ok := m.findMsg(c.Name, e.Ref); ok {
					m.setStatus(c.Name, e.Ref, history.Failed)
				}
			}
		}
		m.setNotice(true, "%s", e.Err.Message)
	case client.SecurityEvent:
		// Loud: a tampered link is someone trying to listen in.
		m.setNotice(true, "SECURITY: %s", e.Message)
		return m.bell()
	}
	return nil
}

func (m *model) onPresence(p proto.Presence) tea.Cmd {
	m.presence[p.Name] = p
	if _, ok := m.contact(p.Name); !ok {
		return nil
	}
	if !p.Online() {
		seen := p.LastSeen
		if seen == 0 {
			seen = time.Now().UnixMilli()
		}
		m.db.SetLastSeen(p.Name, seen)
		delete(m.typing, p.Name)
	}
	var cmd tea.Cmd
	if p.PublicKey != "" {
		cmd = m.observeKey(p.Name, p.PublicKey)
	}
	m.reloadContacts()
	return cmd
}

// observeKey pins a contact's first key and raises the alarm on a change.
func (m *model) observeKey(name, key string) tea.Cmd {
	st, err := m.db.ObserveKey(name, key)
	if err != nil {
		m.setNotice(true, "key of %s: %v", name, err)
		return nil
	}
	m.reloadContacts()
	if st == history.KeyChanged {
		m.setNotice(true, "⚠ %s's KEY CHANGED. Messages and calls are refused until you compare safety numbers (/verify %s) and /accept %s", name, name, name)
		return m.bell()
	}
	return nil
}

func (m *model) onCall(e client.CallEvent) tea.Cmd {
	switch e.State {
	case client.CallRinging:
		m.call = &callInfo{peer: e.With, state: "ringing", direction: e.Direction}
		if e.Direction == "incoming" {
			m.ringing = e.With
			return m.bell()
		}
	case client.CallAccepted:
		if m.call != nil {
			m.call.state = "connecting"
		}
		m.ringing = ""
	case client.CallConnected:
		if m.call == nil || m.call.peer != e.With {
			m.call = &callInfo{peer: e.With, direction: e.Direction}
		}
		m.call.state, m.call.path, m.call.via = "connected", e.Path, e.Via
		m.call.connectedAt = time.Now()
		m.ringing = ""
	case client.CallEnded:
		m.logCall(e)
		if m.call != nil && m.call.peer == e.With {
			m.call = nil
		}
		if m.ringing == e.With {
			m.ringing = ""
		}
		if e.PeerReason != "" { // the peer's words, never ours
			m.setNotice(false, "call with %s ended: %s (%s: “%s”)", e.With, e.Reason, e.With, e.PeerReason)
		} else {
			m.setNotice(false, "call with %s ended: %s", e.With, e.Reason)
		}
		if m.cfg.Muted != nil {
			m.cfg.Muted.Store(false)
		}
	}
	return nil
}

// logCall writes an ended call into its conversation (the history keeps
// it): "Outgoing voice call · 0:22", "Missed call from bob" (unread), ….
func (m *model) logCall(e client.CallEvent) {
	k := m.call
	if k == nil || k.peer != e.With {
		k = &callInfo{peer: e.With, direction: e.Direction, state: "ringing"}
	}
	var text string
	missed := false
	switch {
	case !k.connectedAt.IsZero():
		d := time.Since(k.connectedAt).Round(time.Second)
		dir := "Outgoing"
		if e.Direction == "incoming" {
			dir = "Incoming"
		}
		text = fmt.Sprintf("%s voice call · %d:%02d", dir, int(d.Minutes()), int(d.Seconds())%60)
	case e.Direction == "incoming" && k.state == "ringing" && e.Reason == "declined":
		text = "You declined a call from " + e.With
	case e.Direction == "incoming" && k.state == "ringing":
		text, missed = "Missed call from "+e.With, true
	case e.Direction == "incoming":
		text = "Call from " + e.With + " — " + e.Reason
	default:
		text = "Call to " + e.With + " — " + e.Reason
	}
	if err := m.db.LogCall(e.With, e.Call, "☎ "+text, missed); err != nil {
		m.setNotice(true, "call log: %v", err)
		return
	}
	m.reloadContacts()
	if e.With == m.current {
		m.reloadMessages()
		if m.scroll == 0 && !missed {
			m.markRead()
		}
	} else {
		m.unread[e.With] = m.db.Unread(e.With)
	}
}

// sendTyping tells the open conversation's peer whether we type.
func (m *model) sendTyping(on bool) tea.Cmd {
	peer := m.current
	if on {
		if peer == "" || m.typingTo == peer && time.Since(m.typedAt) < 3*time.Second {
			return nil
		}
		m.typingTo, m.typedAt = peer, time.Now()
	} else {
		peer = m.typingTo
		m.typingTo = ""
		if peer == "" {
			return nil
		}
	}
	return func() tea.Msg {
		m.c.SetTyping(m.ctx, peer, on)
		return nil
	}
}

func fmtAgo(ms int64, now time.Time) string {
	if ms == 0 {
		return "offline"
	}
	d := now.Sub(time.UnixMilli(ms))
	switch {
	case d < time.Minute:
		return "seen just now"
	case d < time.Hour:
		return fmt.Sprintf("seen %dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("seen %dh ago", int(d.Hours()))
	}
	return "seen " + time.UnixMilli(ms).Format("Jan 2")
}

func trimCmd(line string) (string, string) {
	line = strings.TrimSpace(line)
	cmd, arg, _ := strings.Cut(line, " ")
	return strings.ToLower(cmd), strings.TrimSpace(arg)
}

// disconnectWords says why the server is out of reach, first what a user
// can do about it: a certificate no trusted CA signed (a self-made one, a
// private CA) fails every retry until --ca names it.
func disconnectWords(err error) string {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return "the server's certificate is not trusted (self-made or a private CA? start with --ca FILE): " + err.Error()
	}
	return "cannot reach the server: " + err.Error()
}
