#!/usr/bin/env bash
# Builds the Kryoptic PKCS#11 module (a software token) from its crate on crates.io when it is
# not built yet, then prints the module path. Also installs OpenSC's pkcs11-tool, with which
# make-token.sh initialises tokens. Idempotent and non-interactive (CI runs it with
# no standard input); installs the Debian packages the build needs (through `sudo -n` when not
# root) and builds with cargo into the repository's .cache/kryoptic/ (ignored by git), so a
# second run does nothing.
#
# The crate is a pinned version checked against its pinned SHA-256. Features: the SQLite
# store, AES, RSA, ECDSA and ECDH, hashes and HMAC, SP 800-108 KDFs, linked against the
# system's OpenSSL. Kryoptic's `standard` set also has EdDSA, which needs OpenSSL 3.2; Debian
# 12 has 3.0.
#
#   kryoptic-setup/install.sh             build when needed, print the module path
#   kryoptic-setup/install.sh --no-build  print the module path, or fail saying to run the above
set -euo pipefail

version=1.5.4
sha256=21b64b7679ce821f19a7a48b7e40146f26fbb9daa64ee2acb6376788a26d7ae8
features=kryoptic-lib/dynamic,kryoptic-lib/minimal,kryoptic-lib/sp800_108

here=$(cd "$(dirname "$0")" && pwd)
cache=${HKMS_KRYOPTIC_CACHE:-$(dirname "$here")/.cache/kryoptic}
module=$cache/$version/libkryoptic_pkcs11.so

say() { echo "kryoptic-setup: $*" >&2; }

if [ -r "$module" ] && command -v pkcs11-tool >/dev/null 2>&1; then echo "$module"; exit 0; fi
if [ "${1:-}" = --no-build ]; then
  say "Kryoptic $version is not built (no $module, or no pkcs11-tool): run kryoptic-setup/install.sh"
  exit 1
fi

missing=()
for pkg in libclang-dev libssl-dev libsqlite3-dev pkg-config curl ca-certificates opensc; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing from Debian's packages: ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo -n); else
      say "${missing[*]} missing and this user is not root; run: apt-get install ${missing[*]}"
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >&2
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [ -r "$module" ]; then echo "$module"; exit 0; fi
command -v cargo >/dev/null 2>&1 || { say "cargo is missing: install the Rust toolchain"; exit 1; }

src=$cache/src
mkdir -p "$src"
crate=$src/kryoptic-$version.crate
if [ ! -f "$crate" ] || ! echo "$sha256  $crate" | sha256sum -c --status; then
  say "downloading kryoptic $version from crates.io"
  curl -fsSL --retry 3 -o "$crate.part" \
    "https://static.crates.io/crates/kryoptic/kryoptic-$version.crate"
  if ! echo "$sha256  $crate.part" | sha256sum -c --status; then
    rm -f "$crate.part"
    say "kryoptic-$version.crate does not have the pinned SHA-256 $sha256; not building it"
    exit 1
  fi
  mv "$crate.part" "$crate"
fi
rm -rf "$src/kryoptic-$version"
tar -xzf "$crate" -C "$src"

say "building kryoptic $version (cargo build --release; a few minutes)"
start=$(date +%s)
(cd "$src/kryoptic-$version" &&
  CARGO_TARGET_DIR="$cache/target" cargo build --release --locked --quiet \
    --no-default-features --features "$features" >&2)
say "built in $(( $(date +%s) - start )) s"

mkdir -p "$cache/$version"
cp "$cache/target/release/libkryoptic_pkcs11.so" "$module.part"
mv "$module.part" "$module"
# The build tree (about 250 MB) is not needed once the module is in place.
rm -rf "$cache/target" "$src/kryoptic-$version"
echo "$module"
