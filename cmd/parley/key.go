package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/charmbracelet/x/term"
	"github.com/parley-voice/parley/client"
)

// runKey backs up and restores the identity key that owns a name (the
// same file the call page reads and writes: client/keybackup.go).
func runKey(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "export" && args[0] != "import") {
		return errors.New("usage: parley key export --name NAME [--profile DIR] --out FILE | parley key import --in FILE [--profile DIR]")
	}
	op := args[0]
	fs := newFlagSet("key "+op, "[flags]", `
Backs up ('export') or restores ('import') the identity key that owns your
name, with the encryption key your offline messages are sealed to, in a
file wrapped under a passphrase (PBKDF2-HMAC-SHA256, 600,000 iterations;
AES-256-GCM). The call page's "Back up key" and "Restore" use the same
file, so a name moves between a browser and a terminal. The passphrase is
read from the terminal without echo (twice for export), or as the first
line of stdin.
Import never overwrites a profile that owns another key.`)
	var name, profile, path string
	fs.StringVar(&name, "name", "", "your name (export: which profile, and the name written in the backup)")
	fs.StringVar(&profile, "profile", "", "profile directory (default: parley/NAME in the user config dir, ~/.config/parley/NAME on Linux)")
	if op == "export" {
		fs.StringVar(&path, "out", "", "backup file to write (mode 0600)")
	} else {
		fs.StringVar(&path, "in", "", "backup file to read")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("--%s is required", map[string]string{"export": "out", "import": "in"}[op])
	}
	in := bufio.NewReader(os.Stdin)
	if op == "export" {
		if name == "" {
			return errors.New("--name is required")
		}
		if profile == "" {
			profile = defaultProfile(name)
		}
		if _, err := os.Stat(profile); err != nil {
			return fmt.Errorf("no profile at %s: %w", profile, err)
		}
		id, err := client.LoadOrCreateIdentity(profile)
		if err != nil {
			return err
		}
		enc, err := client.LoadOrCreateEncKey(profile)
		if err != nil {
			return err
		}
		pass, err := readPassphrase(in, "Passphrase for the backup: ")
		if err != nil {
			return err
		}
		if term.IsTerminal(os.Stdin.Fd()) { // typed unseen: a typo would lock the backup for good
			again, err := readPassphrase(in, "The same passphrase again: ")
			if err != nil {
				return err
			}
			if again != pass {
				return errors.New("the two passphrases differ: no backup written")
			}
		}
		data, err := client.ExportKeys(name, id, enc, pass)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "The key that owns %q is in %s. Keep it and its passphrase safe: whoever has both can be %s.\n", name, path, name)
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	pass, err := readPassphrase(in, "Passphrase of the backup: ")
	if err != nil {
		return err
	}
	got, id, enc, err := client.ImportKeys(data, pass)
	if err != nil {
		return err
	}
	if name != "" && name != got {
		return fmt.Errorf("the backup is for %q, not %q", got, name)
	}
	if profile == "" {
		profile = defaultProfile(got)
	}
	if err := client.SaveKeys(profile, id, enc); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Restored the key of %q into %s: parley chat --name %s --profile %s\n", got, profile, got, profile)
	return nil
}

// readPassphrase reads a passphrase from the terminal without echo, or
// the first line of in when stdin is not a terminal.
func readPassphrase(in *bufio.Reader, prompt string) (string, error) {
	if term.IsTerminal(os.Stdin.Fd()) {
		fmt.Fprint(os.Stderr, prompt)
		b, err := term.ReadPassword(os.Stdin.Fd())
		fmt.Fprintln(os.Stderr)
		return string(b), err
	}
	line, err := in.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
