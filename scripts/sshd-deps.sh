#!/usr/bin/env bash
# Debian's OpenSSH for the AliEnToken tests, which copy tokens to a private sshd on loopback, and
# sshfs over it (a network file system for the state-directory tests)
# (tests/alien_token/conftest.py starts it with its own host key, config and port; the system
# sshd is never used or started). Best effort: see apt-deps.sh.
exec bash "$(dirname "$0")/apt-deps.sh" sshd-deps.sh openssh-server openssh-client sshfs
