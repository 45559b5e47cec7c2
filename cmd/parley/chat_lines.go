package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/proto"
)

// chatLines is the plain line mode: readable events out, slash commands in.
func chatLines(ctx context.Context, c *client.Client, hist *history.DB, in io.Reader, out io.Writer) error {
	go func() {
		for ev := range c.Events() {
			if s := eventLine(ev); s != "" {
				fmt.Fprintf(out, "%s %s\n", time.Now().Format("15:04:05"), s)
			}
		}
	}()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var cmd jsonCommand
		f := strings.Fields(line)
		switch {
		case f[0] == "/quit":
			return nil
		case f[0] == "/msg" && len(f) >= 3:
			cmd = jsonCommand{Cmd: "send", To: f[1], Text: strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, "/msg"), " "+f[1]))}
		case f[0] == "/call" && len(f) == 2:
			cmd = jsonCommand{Cmd: "call", To: f[1]}
		case f[0] == "/answer" && len(f) == 2:
			cmd = jsonCommand{Cmd: "answer", From: f[1]}
		case f[0] == "/decline" && len(f) == 2:
			cmd = jsonCommand{Cmd: "decline", From: f[1]}
		case f[0] == "/hangup" && len(f) == 2:
			cmd = jsonCommand{Cmd: "hangup", With: f[1]}
		case f[0] == "/away":
			cmd = jsonCommand{Cmd: "status", Status: "away"}
		case f[0] == "/back":
			cmd = jsonCommand{Cmd: "status", Status: "online"}
		case f[0] == "/who":
			cmd = jsonCommand{Cmd: "who"}
		case f[0] == "/send" && len(f) >= 3:
			cmd = jsonCommand{Cmd: "send-file", To: f[1], Path: strings.TrimSpace(line[strings.Index(line, f[1])+len(f[1]):])}
		case f[0] == "/accept-file" && len(f) == 2:
			cmd = jsonCommand{Cmd: "accept-file", ID: f[1]}
		case f[0] == "/decline-file" && len(f) == 2:
			cmd = jsonCommand{Cmd: "decline-file", ID: f[1]}
		case !strings.HasPrefix(f[0], "/") && strings.HasSuffix(f[0], ":") && len(f) >= 2:
			cmd = jsonCommand{Cmd: "send", To: strings.TrimSuffix(f[0], ":"), Text: strings.TrimSpace(line[len(f[0]):])}
		default:
			fmt.Fprintln(out, "commands: NAME: TEXT | /msg NAME TEXT | /call NAME | /answer NAME | /decline NAME | /hangup NAME | /send NAME PATH | /accept-file ID | /decline-file ID | /away | /back | /who | /quit")
			continue
		}
		switch v := runJSONCommand(ctx, c, hist, "", cmd).(type) { // no "display" here: the line mode has no profile to keep it in
		case map[string]any:
			switch v["event"] {
			case "error":
				fmt.Fprintf(out, "! %v\n", v["message"])
			case "who":
				for _, u := range v["users"].([]map[string]any) {
					fmt.Fprintf(out, "  %-20s %v\n", u["name"], u["status"])
				}
			case "file-offered":
				fmt.Fprintf(out, "offering %v to %v (transfer %v)\n", v["path"], v["to"], v["id"])
			}
		}
	}
	return sc.Err()
}

// eventLine renders an event for people.
func eventLine(ev client.Event) string {
	switch e := ev.(type) {
	case client.ReadyEvent:
		if e.Reconnect {
			return "reconnected as " + e.Name
		}
		return "signed in as " + e.Name
	case client.DisconnectedEvent:
		return fmt.Sprintf("connection lost (%v); retrying in %s", e.Err, e.Retry)
	case client.PresenceEvent:
		return fmt.Sprintf("%s is %s", e.Name, e.Status)
	case client.MessageEvent:
		return fmt.Sprintf("<%s> %s", e.From, e.Text)
	case client.DeliveredEvent:
		return fmt.Sprintf("✓ delivered to %s", e.To)
	case client.StoredEvent:
		return fmt.Sprintf("✓ on the server for %s, sealed to their key (held there until their client takes it)", e.To)
	case client.ReadEvent:
		return fmt.Sprintf("✓✓ read by %s", e.By)
	case client.CallEvent:
		switch e.State {
		case client.CallRinging:
			if e.Direction == "incoming" {
				return fmt.Sprintf("\a%s is calling: /answer %s or /decline %s", e.With, e.With, e.With)
			}
			return "calling " + e.With + "…"
		case client.CallConnected:
			return fmt.Sprintf("in call with %s (%s)", e.With, e.Path)
		case client.CallEnded:
			return fmt.Sprintf("call with %s ended: %s", e.With, e.Reason)
		}
		return ""
	case client.StatsEvent:
		return ""
	case client.FileOfferEvent:
		if e.Auto {
			return fmt.Sprintf("%s sends %s (%s): accepted", e.From, e.Name, client.HumanBytes(e.Size))
		}
		return fmt.Sprintf("\a%s offers %s (%s, %s): /accept-file %s or /decline-file %s", e.From, e.Name, client.HumanBytes(e.Size), orUnknown(e.Type), e.ID, e.ID)
	case client.FileProgressEvent:
		return fmt.Sprintf("%s %s/%s %s", e.ID, client.HumanBytes(e.Bytes), client.HumanBytes(e.Size), fileRateWords(e.Rate, e.ETA))
	case client.FileDoneEvent:
		if e.Direction == "send" {
			return fmt.Sprintf("✓ %s arrived at %s (SHA-256 checked)", e.Name, e.Peer)
		}
		return fmt.Sprintf("✓ %s from %s saved as %s (SHA-256 checked)", e.Name, e.Peer, e.File)
	case client.FileFailedEvent:
		return fmt.Sprintf("! %s (%s): %s", e.Name, e.Code, e.Reason)
	case client.ErrorEvent:
		if e.Err.Code == proto.CodeShuttingDown || e.Err.Code == proto.CodeReplaced {
			return ""
		}
		return "! " + e.Err.Message
	}
	return ""
}

func orUnknown(s string) string {
	if s == "" {
		return "type unknown"
	}
	return s
}

// fileRateWords is "12.3 MB/s, 4 s left".
func fileRateWords(rate, eta float64) string {
	if rate <= 0 {
		return "waiting"
	}
	return fmt.Sprintf("%s/s, %s left", client.HumanBytes(int64(rate)), (time.Duration(eta) * time.Second).String())
}
