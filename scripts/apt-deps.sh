#!/usr/bin/env bash
# Install Debian packages the test suite exercises for real, when missing:
#     scripts/apt-deps.sh [--strict] LABEL PACKAGE...
# As root with apt-get only; `apt-get update` runs only when the first install attempt fails
# (the package lists are usually there). Package maintainer scripts must not start system-wide
# daemons (sshd, munged, mariadbd, slurm): the tests run private instances, so a policy-rc.d
# that denies service starts is put in place for the install when none exists.
#
# Best effort by default (for `make test`): when not root, without apt-get, or when the install
# fails, it says what is missing and exits 0; the tests then skip with that reason, and under CI
# (ORCH_CI=1) those skips fail. With --strict: exit 1 when the install failed, 2 when it cannot
# install here (not root, or no apt-get).
set -euo pipefail

strict=0
if [ "${1:-}" = "--strict" ]; then strict=1; shift; fi
label=${1:?usage: apt-deps.sh [--strict] LABEL PACKAGE...}
shift

fail() {  # $1: exit status with --strict; $2: message
  echo "$label: $2" >&2
  [ "$strict" -eq 1 ] && exit "$1"
  exit 0
}

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" -eq 0 ] || fail 2 "not root, cannot install missing Debian packages: ${missing[*]}"
command -v apt-get >/dev/null || fail 2 "no apt-get, cannot install missing Debian packages: ${missing[*]}"

policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from %s: no service starts during install\nexit 101\n' "$0" >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
log=$(mktemp)
cleanup() { [ "$made_policy" -eq 1 ] && rm -f "$policy"; rm -f "$log"; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fail 1 "apt-get install failed for: ${missing[*]} (their tests will skip)"
  fi
fi
echo "$label: installed Debian packages: ${missing[*]}" >&2
