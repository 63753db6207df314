#!/usr/bin/env bash
# Debian packages for the project's own single-node Slurm cluster (tests/slurm/cluster.sh):
# slurmctld, slurmd, slurm-client and munge; with --accounting also slurmdbd and mariadb-server
# (so that `sacct` works). Installs what is missing with apt-get when root; `apt-get update` runs
# only when the first install attempt fails (the package lists are usually there already).
#
# Package maintainer scripts must not start system-wide munged/mariadbd/slurm daemons: the
# cluster runs private instances, and nothing here may leave daemons it did not mean to start.
# A policy-rc.d that denies service starts is put in place for the install when none exists.
#
# Exit status: 0 all present (or installed), 1 install failed, 2 cannot install here (not root,
# or no apt-get). With --best-effort (for `make test`) it says what is missing and exits 0; the
# tests then skip with that reason, and under CI (ORCH_CI=1) those skips fail.
set -euo pipefail

accounting=0
best_effort=0
for arg in "$@"; do
  case "$arg" in
    --accounting) accounting=1 ;;
    --best-effort) best_effort=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "slurm-deps.sh: unknown argument: $arg (use --accounting, --best-effort)" >&2; exit 2 ;;
  esac
done

want=(slurmctld slurmd slurm-client munge)
[ "$accounting" -eq 1 ] && want+=(slurmdbd mariadb-server)

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

fail() {  # $1: exit status when not best-effort; $2: message
  echo "slurm-deps.sh: $2" >&2
  [ "$best_effort" -eq 1 ] && exit 0
  exit "$1"
}

if [ "$(id -u)" -ne 0 ]; then
  fail 2 "not root, cannot install missing Debian packages: ${missing[*]}"
fi
if ! command -v apt-get >/dev/null; then
  fail 2 "no apt-get, cannot install missing Debian packages: ${missing[*]}"
fi

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
    fail 1 "apt-get install failed for: ${missing[*]}"
  fi
fi
rm -f "$log"
echo "slurm-deps.sh: installed Debian packages: ${missing[*]}" >&2
