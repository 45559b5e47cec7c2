//go:build audiodevice && !linux

package device

// quietSoundSystem: only libasound (Linux) prints on its own.
func quietSoundSystem() {}
