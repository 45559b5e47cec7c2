#!/usr/bin/env bash
# Installs what `make bench-relay` compares against: Debian's coturn, with
# its service kept from starting (a policy-rc.d that exits 101), because the
# benchmark runs its own turnserver in the foreground on loopback. Needs
# root; without it, only says what is missing.
set -euo pipefail

command -v turnserver >/dev/null 2>&1 && command -v taskset >/dev/null 2>&1 && exit 0
need=(coturn)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ "$(id -u)" != 0 ]; then
  echo "install-bench-deps: missing ${need[*]} and not root; 'parley bench relay --compare' needs them" >&2
  exit 0
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "install-bench-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
