package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/parley-voice/parley/internal/history"
)

// shownLog closes the last gap between printing a message in the JSON mode
// and marking it shown in the history (an fsynced transaction): right
// after a message line is written to stdout, one small append here records
// it, before anything slower. A process killed in between its stdout write
// and the history's mark has, at worst, this append in the page cache
// (which survives the process), so the next start does not print the
// message again; one killed before it prints it again (the id is the same,
// so a script can tell). The log is emptied once the history has the marks.
type shownLog struct {
	mu   sync.Mutex // guards f, size
	f    *os.File
	size int64
}

// openShownLog opens PROFILE/shown.log and returns what it holds
// ("peer id" pairs noted since the history last caught up).
func openShownLog(profile string) (*shownLog, map[string]bool, error) {
	path := filepath.Join(profile, "shown.log")
	seen := map[string]bool{}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			seen[sc.Text()] = true
		}
		f.Close()
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("shown log: %w", err)
	}
	st, _ := f.Stat()
	return &shownLog{f: f, size: st.Size()}, seen, nil
}

func shownKey(peer, id string) string { return peer + " " + id }

// note records that peer's message id was printed.
func (l *shownLog) note(peer, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, _ := l.f.WriteString(shownKey(peer, id) + "\n")
	l.size += int64(n)
}

// caughtUp empties the log once the history holds every mark it noted
// (called after a mark; cheap until the log grows).
func (l *shownLog) caughtUp(force bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !force && l.size < 64<<10 {
		return
	}
	if l.f.Truncate(0) == nil {
		l.size = 0
	}
}

func (l *shownLog) close() { l.f.Close() }

// replayUnshown prints the messages stored but not shown by a previous
// run (killed between the two), except those its shown log saw printed,
// and marks them all shown.
func replayUnshown(hist *history.DB, seen map[string]bool, print func(history.Message)) error {
	unshown, err := hist.Unshown()
	if err != nil {
		return err
	}
	for _, m := range unshown {
		if !seen[shownKey(m.Peer, m.ID)] {
			print(m)
		}
		if err := hist.MarkShown(m.Peer, m.ID); err != nil {
			return err
		}
	}
	return nil
}
