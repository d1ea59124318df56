#!/usr/bin/env bash
# Make a Docker engine answer, for `make images` and the image tests. Idempotent; never fails the
# build: without root or apt-get it says why and exits 0, and the tests that need Docker skip
# themselves.
#
# - Installs Debian's docker.io (and debootstrap, which makes the local base image when
#   python:3.11-slim-bookworm cannot be pulled) with apt-get when missing and we are root.
# - Starts `dockerd --bridge=none --iptables=false` in the background (log: $ROOTML_DOCKERD_LOG,
#   default /tmp/rootml-dockerd.log) when `docker info` fails, and waits up to 60 s for it.
#   No bridge network: containers run with `--network none` or `--network host`.
set -u

LOG=${ROOTML_DOCKERD_LOG:-/tmp/rootml-dockerd.log}
say() { echo "start-docker: $*"; }
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {  # packages...: install with apt-get when we may; 0 when installed
    if ! is_root; then
        say "not root: cannot install $* (install them, or ask for a Docker engine)"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get unavailable: cannot install $*"
        return 1
    fi
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { say "apt-get could not install $*"; return 1; }
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    # a reachable engine elsewhere (DOCKER_HOST, a rootless one) needs only the client
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        say "a Docker engine answers"
        exit 0
    fi
    apt_install docker.io || { say "no Docker engine: the image tests will be skipped"; exit 0; }
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    apt_install debootstrap \
        || say "without debootstrap, 'make images' needs python:3.11-slim-bookworm pulled or loaded"
fi

if docker info >/dev/null 2>&1; then
    say "a Docker engine answers ($(docker info -f '{{.ServerVersion}}' 2>/dev/null))"
    exit 0
fi

if ! is_root; then
    say "no Docker engine answers this user and not root: cannot start dockerd;" \
        "the image tests will be skipped (start one: sudo dockerd --bridge=none --iptables=false," \
        "and join the 'docker' group)"
    exit 0
elif pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but does not answer yet; waiting"
else
    say "starting dockerd --bridge=none --iptables=false (log: $LOG)"
    nohup dockerd --bridge=none --iptables=false >"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        say "a Docker engine answers ($(docker info -f '{{.ServerVersion}}' 2>/dev/null))"
        exit 0
    fi
    sleep 1
done
say "dockerd did not answer within 60 s (log: $LOG); the image tests will be skipped"
tail -5 "$LOG" 2>/dev/null | sed 's/^/  /'
exit 0
