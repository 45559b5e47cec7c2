package e2e

import (
	"os"
	"testing"

	"github.com/parley-voice/parley/internal/testutil"
)

// TestMain fails the run when a client, server or lab goroutine outlives
// the tests.
func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }
