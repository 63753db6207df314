#!/usr/bin/env bash
# Debian packages the test suite exercises for real: podman with runc and docker.io
# (containers; the tests start their own docker daemon), a static busybox (to build a test
# image offline) and headless Chromium (the status page, as a person sees it). Best effort:
# see apt-deps.sh.
exec bash "$(dirname "$0")/apt-deps.sh" system-deps.sh podman runc busybox-static chromium docker.io
