#!/usr/bin/env bash
# Make a Debian bookworm + Python 3.11 base image from Debian's packages and
# `docker import` it, for machines that reach Debian's mirror but no container
# registry. Where a registry is reachable, use python:3.11-slim-bookworm instead.
#
# Safe to re-run: does nothing when the image already exists (REBUILD_BASE=1 rebuilds).
#
# Environment:
#   BASE_TAG        image to create (default kserve-detector-base:bookworm)
#   SUITE           Debian suite (default bookworm: Python 3.11)
#   DEBIAN_MIRROR   mirror URL (default: the one apt uses here, else deb.debian.org)
#   REBUILD_BASE    1 = rebuild even if BASE_TAG exists
set -euo pipefail

BASE_TAG="${BASE_TAG:-kserve-detector-base:bookworm}"
SUITE="${SUITE:-bookworm}"
REBUILD_BASE="${REBUILD_BASE:-0}"

log() { printf 'base-image: %s\n' "$*" >&2; }

if [[ "$REBUILD_BASE" != 1 ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    log "$BASE_TAG exists"
    exit 0
fi

# The mirror apt already uses here (deb822 or one-line sources), so the same
# network path that installs packages on this machine builds the image.
apt_mirror() {
    local uri=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri="$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"

if [[ "$(id -u)" != 0 ]]; then
    log "debootstrap needs root; run as root or pull python:3.11-slim-bookworm"
    exit 2
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
    }
fi

ROOTFS="$(mktemp -d /var/tmp/kserve-detector-rootfs.XXXXXX)"
cleanup() { rm -rf "$ROOTFS"; }
trap cleanup EXIT

log "debootstrap $SUITE from $DEBIAN_MIRROR"
# python3-venv brings ensurepip (and so pip inside a venv); nothing else is needed
# to build or run the service: torch, Pillow and grpcio wheels bundle their libraries.
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >/tmp/kserve-detector-debootstrap.log 2>&1; then
    log "debootstrap failed; last lines of /tmp/kserve-detector-debootstrap.log:"
    tail -n 20 /tmp/kserve-detector-debootstrap.log >&2
    exit 1
fi

# What an image never uses: package caches and lists, docs, man pages.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/debootstrap
# `python` as on the official python images, so Dockerfiles work on either base.
ln -sf python3 "$ROOTFS/usr/bin/python"

log "importing as $BASE_TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["python3"]' \
    -c "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase + python3 (debootstrap)\"" \
    - "$BASE_TAG" >/dev/null
docker image inspect "$BASE_TAG" --format 'base-image: {{.RepoTags}} {{.Size}} bytes' >&2
