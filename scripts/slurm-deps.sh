#!/usr/bin/env bash
# Debian packages for the project's own single-node Slurm cluster (tests/slurm/cluster.sh):
# slurmctld, slurmd, slurm-client and munge; with --accounting also slurmdbd and mariadb-server
# (so that `sacct` works). Installs what is missing with apt-get when root; `apt-get update` runs
# only when the first install attempt fails (the package lists are usually there already).
#
# Package maintainer scripts must not start system-wide munged/mariadbd/slurm daemons (see
# apt-deps.sh, which does the install).
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
strict=(--strict)
[ "$best_effort" -eq 1 ] && strict=()
exec bash "$(dirname "$0")/apt-deps.sh" "${strict[@]}" slurm-deps.sh "${want[@]}"
