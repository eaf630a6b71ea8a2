#!/usr/bin/env bash
# Make sure a Docker engine answers: reuse a running one, else install Debian's
# docker.io (root only) and start dockerd in the background.
#
# Safe to re-run. Exit codes: 0 = an engine answers; 2 = none can be had here
# (not root, no apt-get, or dockerd did not come up) - callers may skip on 2.
#
# Environment:
#   DOCKERD_LOG      where dockerd writes its log (default /tmp/dockerd.log)
#   DOCKERD_WAIT_S   seconds to wait for the engine to answer (default 60)
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
DOCKERD_WAIT_S="${DOCKERD_WAIT_S:-60}"

log() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

if engine_answers; then
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    log "no Docker engine answers, and installing or starting one needs root;" \
        "start Docker (or join the docker group), then re-run"
    exit 2
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no Docker engine and no apt-get to install one; install Docker, then re-run"
        exit 2
    fi
    log "installing docker.io from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q docker.io >/dev/null 2>&1; then
        # A fresh machine has no package lists yet.
        apt-get update -q >/dev/null
        apt-get install -y -q docker.io >/dev/null || {
            log "apt-get install docker.io failed"
            exit 2
        }
    fi
fi

# A daemon may already be starting (another test run); start ours only if not.
if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon must outlive the shell or test process that started it.
    setsid dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
fi

for _ in $(seq 1 "$DOCKERD_WAIT_S"); do
    if engine_answers; then
        log "engine ready"
        exit 0
    fi
    sleep 1
done

log "dockerd did not answer within ${DOCKERD_WAIT_S}s; last log lines:"
tail -n 20 "$DOCKERD_LOG" >&2 2>/dev/null || true
exit 2
