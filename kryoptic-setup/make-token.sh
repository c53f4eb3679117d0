#!/usr/bin/env bash
# Creates (idempotently) a Kryoptic configuration and a named token in the folder it is given,
# then prints the environment to use it, as `export` lines (as softhsm-setup/make-token.sh).
# Kryoptic must be built first (kryoptic-setup/install.sh); this script does not build it.
#
#   kryoptic-setup/make-token.sh DIR LABEL
#
# The configuration has a fixed number of slots (HKMS_KRYOPTIC_SLOTS, default 6), each with its
# own SQLite file: Kryoptic offers exactly the slots its configuration lists, so each token
# made in DIR (a node's, then its transport key cards) takes the first uninitialised one.
# PINs: HKMS_USER_PIN / HKMS_SO_PIN when set (tests use known ones); otherwise random PINs made
# on first use and kept in DIR/user.pin and DIR/so.pin (mode 0600). A token that already exists
# is left as it is.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR LABEL" >&2
  exit 2
fi
dir=$1
label=$2
here=$(cd "$(dirname "$0")" && pwd)
module=$("$here/install.sh" --no-build)

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
umask 077

conf="$dir/kryoptic.conf"
if [ ! -f "$conf" ]; then
  {
    echo "# Kryoptic configuration made by hkms kryoptic-setup/make-token.sh"
    for slot in $(seq 1 "${HKMS_KRYOPTIC_SLOTS:-6}"); do
      printf '\n[[slots]]\nslot = %d\ndbtype = "sqlite"\ndbargs = "%s/tokens/slot%d.sql"\n' \
        "$slot" "$dir" "$slot"
    done
  } > "$conf"
fi
export KRYOPTIC_CONF="$conf"

random_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
if [ -n "${HKMS_USER_PIN:-}" ]; then printf '%s' "$HKMS_USER_PIN" > "$dir/user.pin"
elif [ ! -f "$dir/user.pin" ]; then random_pin > "$dir/user.pin"; fi
if [ -n "${HKMS_SO_PIN:-}" ]; then printf '%s' "$HKMS_SO_PIN" > "$dir/so.pin"
elif [ ! -f "$dir/so.pin" ]; then random_pin > "$dir/so.pin"; fi

# One line per slot: "SLOT-ID LABEL" for initialised tokens, "SLOT-ID -" for free ones.
slots() {
  pkcs11-tool --module "$module" --list-token-slots 2>/dev/null | awk '
    /^Slot [0-9]+ \(0x[0-9a-f]+\)/ { if (id != "") print id, (init ? lbl : "-");
      id = $3; gsub(/[()]/, "", id); lbl = ""; init = 0 }
    /token label *:/ { sub(/.*token label *: */, ""); lbl = $0 }
    /token flags *:/ { init = ($0 ~ /token initialized/) }
    END { if (id != "") print id, (init ? lbl : "-") }'
}

if ! slots | awk -v l="$label" '$2 == l { found = 1 } END { exit !found }'; then
  free=$(slots | awk '$2 == "-" { print $1; exit }')
  if [ -z "$free" ]; then
    echo "kryoptic-setup: no free slot left in $conf for $label" >&2
    exit 1
  fi
  pkcs11-tool --module "$module" --slot "$free" --init-token --label "$label" \
    --so-pin "$(cat "$dir/so.pin")" >/dev/null
  pkcs11-tool --module "$module" --slot "$free" --login --login-type so \
    --so-pin "$(cat "$dir/so.pin")" --init-pin --pin "$(cat "$dir/user.pin")" >/dev/null
fi

echo "export KRYOPTIC_CONF=$conf"
echo "export HKMS_PKCS11_MODULE=$module"
echo "export HKMS_TOKEN_LABEL=$label"
echo "export HKMS_PIN_FILE=$dir/user.pin"
echo "export HKMS_SO_PIN_FILE=$dir/so.pin"
