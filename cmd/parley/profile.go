package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/parley-voice/parley/proto"
)

// lockProfile takes the profile's lock (an flock on PROFILE/lock, released
// when the process ends, however it ends): two processes with one identity
// would sign each other out of the server in turn. The second one gets an
// error naming the first.
func lockProfile(dir string) (unlock func(), err error) {
	unlock, holder, err := lockDir(dir)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("the profile %s is in use by another parley process%s: one profile signs in once (use --profile for a second identity)", dir, holder)
	}
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", dir, err)
	}
	return unlock, nil
}

// lockDataDir takes serve's --data lock (DIR/lock): two servers on one
// directory would open one NATS JetStream store twice and each believe it
// alone binds names.
func lockDataDir(dir string) (unlock func(), err error) {
	unlock, holder, err := lockDir(dir)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("the data directory %s is in use by another parley serve%s: give this one its own --data (and --listen, --stun)", dir, holder)
	}
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", dir, err)
	}
	return unlock, nil
}

// lockDir takes an flock on DIR/lock (created, with DIR, if missing) and
// writes our pid in it. When another process holds it, err is
// syscall.EWOULDBLOCK and holder names its pid (" (pid N)") if known.
func lockDir(dir string) (unlock func(), holder string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			err = fmt.Errorf("lock: %w", err)
		}
		return nil, holder, err
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, "", nil
}

// displayNameFile keeps our display name in the profile (one line).
const displayNameFile = "display-name"

// profileDisplayName returns the display name for this run: set (and
// kept in the profile) when the flag is given — "" clears it — else the
// one the profile keeps.
func profileDisplayName(dir string, flag *string) (string, error) {
	if flag != nil {
		return *flag, saveDisplayName(dir, *flag)
	}
	b, err := os.ReadFile(filepath.Join(dir, displayNameFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("profile %s: %w", dir, err)
	}
	s := strings.TrimSpace(string(b))
	if s != "" {
		if err := proto.ValidateDisplayName(s); err != nil {
			return "", fmt.Errorf("profile %s: %s: %w", dir, displayNameFile, err)
		}
	}
	return s, nil
}

// saveDisplayName keeps s (checked) as the profile's display name.
func saveDisplayName(dir, s string) error {
	if s != "" {
		if err := proto.ValidateDisplayName(s); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, displayNameFile), []byte(s+"\n"), 0o600); err != nil {
		return fmt.Errorf("profile %s: %w", dir, err)
	}
	return nil
}
