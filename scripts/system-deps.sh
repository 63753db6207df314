#!/usr/bin/env bash
# Debian packages the test suite exercises for real: podman with runc (containers) and a static
# busybox (to build a test image offline). Installed only when running as root with apt-get;
# otherwise says what is missing and carries on (those tests then skip with that reason,
# and under CI, where ORCH_CI=1, the skips fail).
set -euo pipefail
want=(podman runc busybox-static)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: not root or no apt-get; missing Debian packages: ${missing[*]} (their tests will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
echo "installed Debian packages: ${missing[*]}" >&2
