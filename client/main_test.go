package client_test

import (
	"os"
	"testing"

	"github.com/parley-voice/parley/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }
