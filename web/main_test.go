package web_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/parley-voice/parley/internal/testutil"
)

// The browser tests run Chromium, a signaling server and Go clients inside
// a private network namespace whose only interface is lo, so no ICE
// candidate or connectivity check can reach a real network: TestMain
// re-executes the test binary under `unshare --net` (root only) after
// bringing lo up. nsMarker tells the re-executed binary it is inside.
const nsMarker = "PARLEY_WEB_TEST_IN_NETNS"

// chromiumPath is Debian's browser binary (not the /usr/bin wrapper).
const chromiumPath = "/usr/lib/chromium/chromium"

var screenshotDir = flag.String("screenshots", "", "directory the browser tests write page screenshots to (empty: don't write)")

// browserSkip says why browser tests cannot run here ("" when they can).
var browserSkip string

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(nsMarker) == "" {
		why := browserPrereqs()
		if why == "" {
			code, err := runInNetns()
			if err == nil {
				os.Exit(code)
			}
			why = err.Error()
		}
		browserSkip = why
	} else if why := onlyLoopback(); why != "" {
		browserSkip = why
	}
	if browserSkip != "" {
		fmt.Fprintf(os.Stderr, "\n*** web: BROWSER TESTS SKIPPED: %s ***\n\n", browserSkip)
	}
	code := testutil.VerifyNoLeaks(m)
	closeBrowser()
	os.Exit(code)
}

// browserPrereqs reports what is missing to run the browser tests safely.
func browserPrereqs() string {
	if os.Geteuid() != 0 {
		return "not root, so no private network namespace (run as root, e.g. in CI)"
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		return "chromium not installed at " + chromiumPath + " (apt-get install chromium; `make test` does this)"
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found (util-linux, iproute2)"
		}
	}
	if out, err := exec.Command("unshare", "--net", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Sprintf("cannot create a network namespace: %v: %s", err, out)
	}
	return ""
}

// runInNetns runs this test binary again, with the same flags, inside a new
// network namespace with lo up, and returns its exit code.
func runInNetns() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	args := append([]string{"--net", "--", "/bin/sh", "-c", `ip link set lo up && exec "$0" "$@"`, exe}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), nsMarker+"=1")
	// unshare execs into the test binary (same process): it dies with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), nil
		}
		return 0, fmt.Errorf("re-exec in a network namespace: %w", err)
	}
	return 0, nil
}

// onlyLoopback checks that the namespace has no interface but loopback.
func onlyLoopback() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "list interfaces: " + err.Error()
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 {
			return "interface " + ifc.Name + " exists in the test namespace; refusing to run a browser next to it"
		}
		if ifc.Flags&net.FlagUp == 0 {
			return "lo is down in the test namespace"
		}
	}
	return ""
}

var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserCancel context.CancelFunc
	browserErr    error
	browserDir    string
)

// browser returns the shared Chromium (started on first use), or skips.
func browser(t testing.TB) context.Context {
	t.Helper()
	if browserSkip != "" {
		t.Skip("BROWSER TESTS SKIPPED: " + browserSkip)
	}
	browserOnce.Do(startBrowser)
	if browserErr != nil {
		t.Fatalf("start chromium: %v", browserErr)
	}
	return browserCtx
}

func startBrowser() {
	browserDir, browserErr = os.MkdirTemp("", "parley-web-chromium-")
	if browserErr != nil {
		return
	}
	browserCtx, browserCancel, browserErr = launchBrowser(browserDir)
}

// launchBrowser starts Chromium with the flags every test needs, profile
// in dir, then extra (a later value of a flag replaces the default's).
func launchBrowser(dir string, extra ...chromedp.ExecAllocatorOption) (context.Context, func(), error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(dir),
		chromedp.NoSandbox,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns,Translate,BlinkGenPropertyTrees"),
		chromedp.WindowSize(1000, 720),
	)
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	stop := func() { cancel(); cancelAlloc() }
	start, done := context.WithTimeout(ctx, 30*time.Second)
	defer done()
	// The first Do starts the browser; its context must outlive it, so
	// the timeout only guards the start (see chromedp.Run).
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(ctx) }()
	var err error
	select {
	case err = <-errc:
	case <-start.Done():
		err = errors.New("chromium did not start in 30 s")
	}
	return ctx, stop, err
}

// ownBrowser starts a browser of the test's own, with extra flags, for
// what the shared one's flags rule out (it is closed when the test ends).
func ownBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	browser(t) // skips where browsers cannot run
	ctx, stop, err := launchBrowser(t.TempDir(), extra...)
	if err != nil {
		stop()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		chromedp.Cancel(c)
		cancel()
		stop()
	})
	return ctx
}

func closeBrowser() {
	if browserCancel != nil {
		c, cancel := context.WithTimeout(browserCtx, 10*time.Second)
		chromedp.Cancel(c)
		cancel()
		browserCancel()
	}
	if browserDir != "" {
		os.RemoveAll(browserDir)
	}
}
