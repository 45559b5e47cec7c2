package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/charmbracelet/x/term"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/internal/tui"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// chatFlags are the flags of `parley chat`.
type chatFlags struct {
	server, name, profile  string
	ca                     string
	json, autoAnswer       bool
	audioIn, audioOut      string
	iceLoopback, relayOnly bool
	contactsOnly           bool
	logLevel               string
	files                  fileFlags
}

// fileFlags are the file-transfer flags of `parley chat`.
type fileFlags struct {
	downloads   string  // received files go here
	acceptFrom  string  // comma-separated names whose files are taken without asking; "*" anyone's
	maxMB       float64 // largest file accepted
	rateMBps    float64 // cap on each outgoing transfer
	noDownloads bool    // decline every offer
}

func addFileFlags(fs interface {
	StringVar(*string, string, string, string)
	Float64Var(*float64, string, float64, string)
	BoolVar(*bool, string, bool, string)
}, f *fileFlags) {
	fs.StringVar(&f.downloads, "downloads", "", "folder received files are saved in (default: PROFILE/downloads); transfer state is kept in PROFILE/transfers")
	fs.StringVar(&f.acceptFrom, "accept-files", "", "comma-separated contacts whose files are accepted without asking (\"*\": anyone's); others wait for accept-file")
	fs.Float64Var(&f.maxMB, "max-file-mb", 4096, "largest file accepted, in MB; larger offers are declined (too_large)")
	fs.Float64Var(&f.rateMBps, "file-rate", 0, "cap on each outgoing file transfer, in MB/s (0: as fast as the path goes; relayed transfers always stay under the relay's budget)")
	fs.BoolVar(&f.noDownloads, "no-downloads", false, "decline every file offer")
}

// config is the client.FileConfig the flags describe.
func (f *fileFlags) config(profile string) client.FileConfig {
	fc := client.FileConfig{
		Dir:      f.downloads,
		StateDir: filepath.Join(profile, "transfers"),
		MaxSize:  int64(f.maxMB * 1e6),
		MaxRate:  f.rateMBps * 1e6,
	}
	if fc.Dir == "" {
		fc.Dir = filepath.Join(profile, "downloads")
	}
	if f.noDownloads {
		fc.Dir = ""
	}
	if f.acceptFrom != "" {
		names := map[string]bool{}
		for _, n := range strings.Split(f.acceptFrom, ",") {
			names[strings.ToLower(strings.TrimSpace(n))] = true
		}
		fc.AutoAccept = func(from string, _ proto.FileInfo) bool { return names["*"] || names[from] }
	}
	return fc
}

func defaultProfile(name string) string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "parley", name)
}

func runChat(ctx context.Context, args []string) error {
	fs := newFlagSet("chat", "--server URL --name NAME [flags]", `
The desktop chat client. Signs in with the identity key kept in the profile
directory (created on first run; the key owns the name), shows who is online,
chats and calls. With --json it reads commands and writes events as JSON
lines, one object per line, for scripts:

  stdin:  {"cmd":"send","to":"bob","text":"hi"}   {"cmd":"call","to":"bob"}
          {"cmd":"answer","from":"bob"}  {"cmd":"decline","from":"bob"}
          {"cmd":"hangup","with":"bob"}  {"cmd":"status","status":"away"}
          {"cmd":"send-file","to":"bob","path":"photo.jpg"}
          {"cmd":"accept-file","id":"…"}  {"cmd":"decline-file","id":"…"}
          {"cmd":"cancel-file","id":"…"}  {"cmd":"files"}
          {"cmd":"who"}  {"cmd":"add","name":"carol"}
          {"cmd":"directory","prefix":"b","online":true}
          {"cmd":"display","name":"Alice Martin"}  {"cmd":"quit"}
  stdout: {"event":"ready",...} presence, message, sent, stored,
          delivered, read, typing, call, stats, link, audio, mute, ...
          (every event and its keys: the README's JSON-lines section)

In a terminal (stdout is a TTY) it runs the full-screen chat client: contacts
with presence, conversations kept in the profile (history.db), delivery and
read ticks, calls; press ? for help. Messages to someone offline are sealed
to their encryption key and wait on the server. Logs then go to PROFILE/parley.log.

Otherwise it reads lines: "/msg NAME TEXT", "/call NAME", "/answer NAME",
"/decline NAME", "/hangup NAME", "/send NAME PATH", "/accept-file ID",
"/decline-file ID", "/who", "/quit", or "NAME: TEXT".

Files go peer to peer over the same connection as calls (relayed through a
supernode only when there is no direct path), are checked against the
sender's SHA-256 before they are kept, and resume after a lost connection
or a restart of either side.`)
	var f chatFlags
	fs.StringVar(&f.server, "server", "http://127.0.0.1:8080", "signaling server URL; several nodes of one cluster separated by commas (the client moves to the next when one is lost)")
	fs.StringVar(&f.ca, "ca", "", "PEM file of a CA certificate to trust for an https:// server, besides the system's (a private deployment or a self-made certificate)")
	fs.StringVar(&f.name, "name", "", "your handle, the name people reach you by (lowercase letters, digits, - _ .)")
	displayFlag := fs.String("display-name", "", "what you call yourself, spaces allowed (\"Alice Martin\"), shown beside your handle to the people you write to; kept in the profile (\"\" clears it; TUI: /nick)")
	fs.StringVar(&f.profile, "profile", "", "profile directory holding the identity key (default: parley/NAME in the user config dir, ~/.config/parley/NAME on Linux)")
	fs.BoolVar(&f.json, "json", false, "scriptable mode: JSON-lines commands on stdin, events on stdout")
	fs.BoolVar(&f.autoAnswer, "auto-answer", false, "answer incoming calls at once")
	fs.StringVar(&f.audioIn, "audio-in", "tone", "audio to send in calls: an Ogg/Opus file, \"tone\" (440 Hz), \"silence\", or \"device\" (the default microphone; needs a binary built with -tags audiodevice)")
	fs.StringVar(&f.audioOut, "audio-out", "", "received call audio: \"device\" plays it on the default speaker (needs -tags audiodevice); a path writes it to that Ogg/Opus file ({peer} in the path is replaced by the peer's name); empty discards it")
	fs.BoolVar(&f.iceLoopback, "ice-loopback", false, "gather ICE candidates on loopback only (single-machine demos and tests)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	fs.BoolVar(&f.contactsOnly, "contacts-only", false, "refuse messages and calls from people not in your contacts (they are told so)")
	fs.BoolVar(&f.relayOnly, "relay-only", false, "always relay calls through a supernode: the people you call never learn your address")
	addFileFlags(fs, &f.files)
	snf := addChatSupernodeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	clientGC()
	if f.name == "" {
		fs.Usage()
		return errors.New("--name is required")
	}
	f.name = strings.ToLower(f.name)
	if err := proto.ValidateRegisterName(f.name); err != nil {
		return err
	}
	if f.profile == "" {
		f.profile = defaultProfile(f.name)
	}
	sound := &chatAudio{in: f.audioIn, out: f.audioOut}
	if err := sound.check(); err != nil {
		return err
	}
	useTUI := !f.json && term.IsTerminal(os.Stdout.Fd()) && term.IsTerminal(os.Stdin.Fd())
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	tlsConf, err := clientTLS(f.ca)
	if err != nil {
		return err
	}
	unlock, err := lockProfile(f.profile) // one process per profile: two would push each other off the server
	if err != nil {
		return err
	}
	defer unlock()
	key, err := client.LoadOrCreateIdentity(f.profile)
	if err != nil {
		return err
	}
	encKey, err := client.LoadOrCreateEncKey(f.profile) // offline messages are sealed to it
	if err != nil {
		return err
	}
	var setDisplay *string // the flag, when given
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "display-name" {
			setDisplay = displayFlag
		}
	})
	display, err := profileDisplayName(f.profile, setDisplay)
	if err != nil {
		return err
	}
	cfg := client.Config{
		Servers:     splitList(f.server),
		Name:        f.name,
		DisplayName: display,
		Key:         key,
		EncKey:      encKey,
		Agent:       "parley-chat",
		TLS:         tlsConf,
		AutoAnswer:  f.autoAnswer,
		Logger:      log,
		AudioSource: sound.source(ctx),
		// Learn our NAT from the server's STUN service after each sign-in:
		// the server uses the report to choose relays for us.
		DiscoverNAT: &client.NATDiscovery{},
		Files:       f.files.config(f.profile),
	}
	// The profile's history is every mode's message store (written before
	// a message is acknowledged, and the memory of ids seen) and outbox
	// (messages handed over stay there until their receipt).
	hist, err := history.Open(filepath.Join(f.profile, "history.db"))
	if err != nil {
		return err
	}
	defer hist.Close()
	cfg.Store = hist
	cfg.Outbox = hist
	cfg.PeerKey = hist.PinnedKey // messages are sealed only to keys bound to the pinned one
	contacts, err := hist.Contacts()
	if err != nil {
		return err
	}
	for _, ct := range contacts {
		cfg.Contacts = append(cfg.Contacts, ct.Name) // the server sends presence for contacts
	}
	cfg.Accept = func(peer string) bool { // blocked (TUI /block): never; strangers: unless --contacts-only
		c, ok := hist.Contact(peer)
		if ok && c.Blocked {
			return false
		}
		return ok || !f.contactsOnly
	}
	muted := new(atomic.Bool)
	if useTUI {
		if log, err = fileLogger(filepath.Join(f.profile, "parley.log"), f.logLevel); err != nil {
			return err
		}
		cfg.Logger = log
		sound.muted = muted
	}
	if f.json {
		hist.TrackShown() // printed after it is stored: what a kill cut off is printed next time
	}
	if f.iceLoopback {
		cfg.SettingEngine = client.LoopbackOnly
	}
	if f.relayOnly {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	cfg.AudioSink = sound.sink()
	sound.log = cfg.Logger
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stdout := &lockedWriter{w: os.Stdout}
	if snf.on {
		var out io.Writer = stdout
		if useTUI {
			out = nil // decisions go to the log file; the screen is the UI's
		}
		stopSN, err := startChatSupernode(ctx, snf, splitList(f.server)[0], key, f.name, cfg.Logger, out, f.json)
		if err != nil {
			return err
		}
		defer stopSN()
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	uiErr := make(chan error, 1)
	go func() {
		switch {
		case f.json:
			uiErr <- chatJSON(ctx, c, hist, f.profile, os.Stdin, stdout)
		case useTUI:
			uiErr <- tui.Run(ctx, tui.Config{Client: c, History: hist, Name: f.name,
				Key: key.Public().(ed25519.PublicKey), Muted: muted, AltScreen: true, AudioNote: audioNote(f.audioIn, f.audioOut),
				DisplayName: display,
				SetDisplayName: func(s string) error {
					if err := c.SetDisplayName(s); err != nil {
						return err
					}
					return saveDisplayName(f.profile, s)
				},
				Backup: func(path, pass string) error {
					data, err := client.ExportKeys(f.name, key, encKey, pass)
					if err != nil {
						return err
					}
					return os.WriteFile(path, data, 0o600)
				}})
		default:
			uiErr <- chatLines(ctx, c, hist, os.Stdin, stdout)
		}
	}()
	select {
	case err = <-uiErr:
		cancel()
		if rerr := <-runErr; err == nil {
			err = rerr
		}
	case rerr := <-runErr:
		// The client stopped by itself: the server refused the name for
		// good. The TUI and the JSON mode end with their events (the JSON
		// mode has printed the error); the line mode may be blocked on
		// stdin, so it is not waited for. Either way, say why and exit
		// non-zero.
		if f.json || useTUI {
			err = <-uiErr
		}
		if rerr != nil {
			err = rerr
		}
	}
	return err
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}
