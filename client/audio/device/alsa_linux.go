//go:build audiodevice && linux

package device

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>

typedef void (*parley_alsa_handler)(const char *file, int line, const char *function, int err, const char *fmt, ...);

static void parley_alsa_quiet(const char *file, int line, const char *function, int err, const char *fmt, ...) {}

// Loads libasound the way miniaudio does (it is never unloaded, so the
// handler stays) and installs a handler that drops its messages.
static int parley_alsa_silence(void) {
	void *h = dlopen("libasound.so.2", RTLD_NOW | RTLD_GLOBAL);
	if (h == NULL) {
		return -1;
	}
	int (*set)(parley_alsa_handler) = (int (*)(parley_alsa_handler))dlsym(h, "snd_lib_error_set_handler");
	if (set == NULL) {
		return -1;
	}
	return set(parley_alsa_quiet);
}
*/
import "C"

import "sync"

var alsaQuiet sync.Once

// quietSoundSystem stops libasound from printing its own diagnostics on
// stderr ("ALSA lib pcm.c:2666: Unknown PCM default", a dozen lines on a
// machine without a sound card): they would draw over the terminal UI.
// Failures reach the caller as errors from Open anyway. Without libasound
// there is nothing to silence.
func quietSoundSystem() {
	alsaQuiet.Do(func() { C.parley_alsa_silence() })
}
