#!/usr/bin/env bash
# Debian's OpenSSH for the AliEnToken tests, which copy tokens to a private sshd on loopback
# (tests/alien_token/conftest.py starts it with its own host key, config and port; the system
# sshd is never used or started). Installs openssh-server and openssh-client when missing, as
# root with apt-get; `apt-get update` runs only when the first attempt fails.
#
# Best effort, like system-deps.sh: when not root, without apt-get, or when the install fails,
# it says what is missing and exits 0; the tests then skip with that reason, and under CI
# (ORCH_CI=1) those skips fail.
set -euo pipefail
want=(openssh-server openssh-client)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "sshd-deps.sh: not root or no apt-get; missing Debian packages: ${missing[*]} (their tests will skip)" >&2
  exit 0
fi

# The package's maintainer scripts would start the system-wide sshd: deny service starts for
# the install when no policy is in place (the tests run their own sshd).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from %s: no service starts during install\nexit 101\n' "$0" >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
cleanup() { [ "$made_policy" -eq 1 ] && rm -f "$policy"; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    echo "sshd-deps.sh: apt-get install failed for: ${missing[*]} (their tests will skip)" >&2
    exit 0
  fi
fi
rm -f "$log"
echo "sshd-deps.sh: installed Debian packages: ${missing[*]}" >&2
