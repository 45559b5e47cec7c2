package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/proto"
)

// jsonCommand is one line of stdin in --json mode.
type jsonCommand struct {
	Cmd    string `json:"cmd"`
	To     string `json:"to,omitempty"`
	From   string `json:"from,omitempty"`
	With   string `json:"with,omitempty"`
	Text   string `json:"text,omitempty"`
	Status string `json:"status,omitempty"`
	// send-file, accept-file, decline-file, cancel-file
	Path   string   `json:"path,omitempty"`
	Name   string   `json:"name,omitempty"` // also add: the contact
	ID     string   `json:"id,omitempty"`
	Reason string   `json:"reason,omitempty"`
	Prefix string   `json:"prefix,omitempty"` // directory
	After  string   `json:"after,omitempty"`  // directory: the next page
	Online bool     `json:"online,omitempty"` // directory: only people online
	IDs    []string `json:"ids,omitempty"`    // read: the messages shown
}

// namedEvent is an event that carries its public name, its JSON shape
// being its own struct tags (client/files.go).
type namedEvent interface{ EventName() string }

// namedJSON is a named event's JSON object, with "event" set to its name.
func namedJSON(ev namedEvent) any {
	b, err := json.Marshal(ev)
	o := map[string]any{}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber() // sizes past 2^53 stay exact
		dec.Decode(&o)
	}
	o["event"] = ev.EventName()
	return o
}

// eventJSON is a client event's JSON-lines form: its public name as
// "event" and the shape its type defines (client/events.go and beside
// each event type). The names are a stable interface for scripts: fields
// may be added, never renamed.
func eventJSON(ev client.Event) any { return namedJSON(ev) }

// errorJSON is an error event: a stable code and a message in words (the
// server's own words for a *proto.Error, never a Go error chain).
func errorJSON(err error) map[string]any {
	var code proto.Code = proto.CodeBadRequest
	msg := ""
	switch {
	case errors.Is(err, client.ErrNotOnline):
		code, msg = proto.CodeOffline, "that person is not online"
	case errors.Is(err, client.ErrUnknownPeer):
		code, msg = proto.CodeNotFound, "nobody of that name is known here"
	case errors.Is(err, client.ErrNotSignedIn):
		code, msg = proto.CodeUnavailable, "not connected to the server right now; try again in a moment"
	case errors.Is(err, client.ErrNoTransfer):
		code, msg = proto.CodeNotFound, "no file transfer with that id"
	case errors.Is(err, client.ErrNoCall):
		code, msg = proto.CodeNotFound, "no call with that person"
	case errors.Is(err, client.ErrCallExists):
		msg = "already in a call with that person"
	case errors.Is(err, client.ErrSelf):
		msg = "that is you"
	default:
		var pe *proto.Error
		if errors.As(err, &pe) {
			code, msg = pe.Code, pe.Message
		} else if c := proto.CodeOf(err); c != proto.CodeInternal {
			code = c
		}
	}
	if msg == "" {
		msg = strings.TrimPrefix(err.Error(), "client: ")
	}
	return map[string]any{"event": "error", "code": code, "message": msg}
}

// chatJSON runs the scriptable mode until quit, EOF on stdin, or ctx.
// A message event is printed after the message is stored and acknowledged:
// shown (PROFILE/shown.log at once, the history after it) when its line is
// written, and a message a kill cut off between store and print is printed
// first at the next start, so each is printed once.
func chatJSON(ctx context.Context, c *client.Client, hist *history.DB, profile string, in io.Reader, out io.Writer) error {
	var mu sync.Mutex // guards enc
	enc := json.NewEncoder(out)
	emit := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(v)
	}
	shown, seen, err := openShownLog(profile)
	if err != nil {
		return err
	}
	defer shown.close()
	err = replayUnshown(hist, seen, func(m history.Message) {
		emit(eventJSON(client.MessageEvent{From: m.Peer, ID: m.ID, Text: m.Text, Time: m.Time, Seq: m.PeerSeq, Path: m.Path}))
	})
	if err != nil {
		return err
	}
	shown.caughtUp(true)
	evDone := make(chan struct{}) // closed when the client has stopped and every event is printed
	go func() {
		defer close(evDone)
		for ev := range c.Events() {
			emit(eventJSON(ev))
			if m, ok := ev.(client.MessageEvent); ok {
				shown.note(m.From, m.ID)
				if err := hist.MarkShown(m.From, m.ID); err != nil {
					emit(errorJSON(err))
					continue
				}
				shown.caughtUp(false)
			}
		}
	}()
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var line []byte
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-evDone:
			return nil // the client stopped (it cannot sign in): runChat says why
		case line, ok = <-lines:
			if !ok {
				return nil
			}
		}
		if len(line) == 0 {
			continue
		}
		var cmd jsonCommand
		if err := json.Unmarshal(line, &cmd); err != nil {
			emit(map[string]any{"event": "error", "code": proto.CodeBadFrame, "message": "not a JSON command: " + err.Error()})
			continue
		}
		if cmd.Cmd == "quit" {
			return nil
		}
		if v := runJSONCommand(ctx, c, hist, profile, cmd); v != nil {
			if o, ok := v.(map[string]any); ok && cmd.ID != "" && o["id"] == nil {
				o["id"] = cmd.ID // the answer names the command it answers
			}
			emit(v)
		}
	}
}

// runJSONCommand carries out one command and returns what to print.
func runJSONCommand(ctx context.Context, c *client.Client, hist *history.DB, profile string, cmd jsonCommand) any {
	var err error
	switch cmd.Cmd {
	case "send":
		var id string
		id, err = c.SendID(ctx, cmd.To, cmd.ID, cmd.Text) // a script's own id, if it gave one
		if err == nil {
			return map[string]any{"event": "sent", "id": id, "to": cmd.To}
		}
	case "call":
		err = c.Call(ctx, cmd.To)
	case "answer":
		err = c.Answer(ctx, cmd.From)
	case "decline":
		err = c.Decline(ctx, cmd.From)
	case "hangup":
		err = c.Hangup(ctx, cmd.With)
	case "status":
		err = c.SetStatus(ctx, proto.Status(cmd.Status))
	case "read":
		// The script showed these messages from cmd.From to a person: their
		// sender sees "read" (a script that shows nothing sends none).
		if len(cmd.IDs) == 0 {
			err = proto.Errorf(proto.CodeBadRequest, "read needs ids: the messages shown")
		} else {
			err = c.MarkRead(ctx, cmd.From, cmd.IDs...)
		}
	case "send-file":
		var id string
		id, err = c.SendFileID(ctx, cmd.To, cmd.Path, cmd.Name, cmd.ID) // a script's own id, if it gave one
		if err == nil {
			return map[string]any{"event": "file-offered", "id": id, "to": cmd.To, "path": cmd.Path}
		}
	case "accept-file":
		err = c.AcceptFile(ctx, cmd.ID)
	case "decline-file":
		err = c.DeclineFile(ctx, cmd.ID, cmd.Reason)
	case "cancel-file":
		err = c.CancelFile(ctx, cmd.ID)
	case "files":
		var ts []client.Transfer
		ts, err = c.Transfers(ctx)
		if err == nil {
			if ts == nil {
				ts = []client.Transfer{}
			}
			return map[string]any{"event": "files", "transfers": ts}
		}
	case "add":
		if _, err = hist.AddContact(cmd.Name); err == nil {
			// The server sends presence for contacts: ask for this one.
			if err = c.AddContacts(ctx, cmd.Name); err == nil || errors.Is(err, client.ErrNotSignedIn) {
				return map[string]any{"event": "added", "name": cmd.Name}
			}
		}
	case "display": // our display name, sent with the next messages and kept in the profile
		if err = c.SetDisplayName(cmd.Name); err == nil && profile != "" {
			err = saveDisplayName(profile, cmd.Name)
		}
		if err == nil {
			return map[string]any{"event": "ok", "cmd": cmd.Cmd}
		}
	case "who":
		var ps []proto.Presence
		ps, err = c.Presence(ctx)
		if err == nil {
			users := make([]map[string]any, 0, len(ps))
			for _, p := range ps {
				users = append(users, map[string]any{"name": p.Name, "status": p.Status, "online": p.Online()})
			}
			return map[string]any{"event": "who", "users": users}
		}
	case "directory":
		var page *proto.DirectoryPage
		page, err = c.Directory(ctx, proto.DirectoryQuery{Prefix: cmd.Prefix, After: cmd.After, Online: cmd.Online})
		if err == nil {
			users := make([]map[string]any, 0, len(page.Entries))
			for _, p := range page.Entries {
				u := map[string]any{"name": p.Name, "status": p.Status, "online": p.Online()}
				if p.LastSeen != 0 {
					u["last_seen"] = p.LastSeen
				}
				users = append(users, u)
			}
			return map[string]any{"event": "directory", "users": users, "next": page.Next}
		}
	default:
		return map[string]any{"event": "error", "code": proto.CodeUnknownType, "message": fmt.Sprintf("unknown command %q (send, call, answer, decline, hangup, status, who, add, display, directory, send-file, accept-file, decline-file, cancel-file, files, quit)", cmd.Cmd)}
	}
	if err != nil {
		e := errorJSON(err)
		e["cmd"] = cmd.Cmd
		return e
	}
	if cmd.ID != "" {
		return map[string]any{"event": "ok", "cmd": cmd.Cmd} // done; its id is added by the caller
	}
	return nil
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
