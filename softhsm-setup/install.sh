#!/usr/bin/env bash
# Installs SoftHSM2 from Debian's packages when it is missing, then prints the module path.
# Idempotent and non-interactive (CI runs it with no standard input). Needs root or sudo.
set -euo pipefail

find_module() {
  for candidate in /usr/lib/softhsm/libsofthsm2.so \
                   /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
                   /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    if [ -r "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! command -v softhsm2-util >/dev/null 2>&1 || ! find_module >/dev/null; then
  echo "softhsm-setup: installing SoftHSM2 from Debian's packages" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo -n); else
      echo "softhsm-setup: SoftHSM2 is missing and this user is not root; run: apt-get install softhsm2" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >&2
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends softhsm2 >&2
fi

find_module || { echo "softhsm-setup: libsofthsm2.so not found after install" >&2; exit 1; }
