#!/usr/bin/env bash
# Creates (idempotently) a SoftHSM2 configuration and a named token in the folder it is given,
# then prints the environment to use it, as `export` lines.
#
#   softhsm-setup/make-token.sh DIR LABEL
#
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
module=$("$here/install.sh")

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
umask 077

conf="$dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
  cat > "$conf" <<CONF
# SoftHSM2 configuration made by hkms softhsm-setup/make-token.sh
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
fi
export SOFTHSM2_CONF="$conf"

random_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
if [ -n "${HKMS_USER_PIN:-}" ]; then printf '%s' "$HKMS_USER_PIN" > "$dir/user.pin"
elif [ ! -f "$dir/user.pin" ]; then random_pin > "$dir/user.pin"; fi
if [ -n "${HKMS_SO_PIN:-}" ]; then printf '%s' "$HKMS_SO_PIN" > "$dir/so.pin"
elif [ ! -f "$dir/so.pin" ]; then random_pin > "$dir/so.pin"; fi

if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*$"; then
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" >/dev/null
fi

echo "export SOFTHSM2_CONF=$conf"
echo "export HKMS_PKCS11_MODULE=$module"
echo "export HKMS_TOKEN_LABEL=$label"
echo "export HKMS_PIN_FILE=$dir/user.pin"
echo "export HKMS_SO_PIN_FILE=$dir/so.pin"
