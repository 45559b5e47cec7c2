#!/usr/bin/env bash
# Installs what Parley's tests need when it is missing: Chromium for the
# call-page tests, nftables/iptables/iproute2 for the NAT lab, tmux for the
# terminal UI tests, and pkg-config, libopus-dev and libopusfile-dev for the
# audio device tests (go test -tags audiodevice ./client/audio/device/...;
# gopkg.in/hraban/opus.v2 links both libraries unless built with -tags
# nolibopusfile). Needs root (CI runs as root); without root it only says
# what is missing, and the tests that need it skip loudly.
set -euo pipefail

need=()
[ -x /usr/lib/chromium/chromium ] || need+=(chromium)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
pkg-config --exists opusfile 2>/dev/null || need+=(libopusfile-dev)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: missing ${need[*]} and not root; tests that need them will skip" >&2
  exit 0
fi
echo "install-test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
