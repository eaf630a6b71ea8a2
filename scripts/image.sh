#!/usr/bin/env bash
# Build the predictor image, or with TARGET=web the web backend's (used by `make image`,
# `make image-web` and tests/container).
#
# Skips the build when an image for the same sources already exists: every build
# is tagged IMAGE:src-<hash> and labelled io.kserve-detector.source-hash, where the
# hash covers the Dockerfile, .dockerignore, pyproject.toml, constraints.txt (the pinned
# versions), README, predictor/, client/, the target, the variant, the extras, the torch
# index and the base image's id.
# Prints the image reference (IMAGE:TAG) as the last line of stdout; logs go to stderr.
#
# Environment:
#   IMAGE            repository name (default kserve-detector)
#   TAG              tag to point at the result (default latest)
#   TARGET           Dockerfile stage to build: empty (default) for the predictor (stage
#                    runtime), light for the torch-free CPU runtime serving compiled
#                    models (VARIANT picks the torch that compiles the demo at build), or
#                    web for the web backend (no torch; VARIANT is ignored)
#   BASE_IMAGE       base for both stages (default python:3.11-slim-bookworm; when it
#                    is not local and cannot be pulled, scripts/base-image.sh makes
#                    kserve-detector-base:bookworm from Debian's packages and that is used)
#   VARIANT          cpu | gpu | auto (default auto: cpu when PyTorch's CPU wheel index
#                    answers, else gpu, the CUDA build that PyPI serves)
#   TORCH_INDEX_URL  index for torch/torchvision (default: the variant's, see Dockerfile)
#   SERVER_EXTRAS    pyproject extras in the predictor's venv (default server; server,int8
#                    adds NNCF for --cpu_precision int8)
#   CA_BUNDLE        CA bundle pip inside the build must trust (default: pip's `cert`
#                    setting or PIP_CERT, else /etc/ssl/certs/ca-certificates.crt)
#   FORCE            1 = build even when the hash-tagged image exists
#   KEEP_OLD         1 = keep older IMAGE:src-* tags (default: remove them)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IMAGE="${IMAGE:-kserve-detector}"
TAG="${TAG:-latest}"
DEFAULT_BASE="python:3.11-slim-bookworm"
LOCAL_BASE="kserve-detector-base:bookworm"
BASE_IMAGE="${BASE_IMAGE:-$DEFAULT_BASE}"
VARIANT="${VARIANT:-auto}"
TARGET="${TARGET:-}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
SERVER_EXTRAS="${SERVER_EXTRAS:-server}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
FORCE="${FORCE:-0}"
KEEP_OLD="${KEEP_OLD:-0}"

log() { printf 'image: %s\n' "$*" >&2; }

bash "$ROOT/scripts/docker-engine.sh"

# --- base image: local, pulled, or made here from Debian's packages.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulling $BASE_IMAGE"
    if ! timeout 300 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
        if [[ "$BASE_IMAGE" != "$DEFAULT_BASE" ]]; then
            log "cannot pull $BASE_IMAGE"
            exit 1
        fi
        log "cannot pull $BASE_IMAGE; using $LOCAL_BASE built with debootstrap"
        BASE_TAG="$LOCAL_BASE" bash "$ROOT/scripts/base-image.sh"
        BASE_IMAGE="$LOCAL_BASE"
    fi
fi
BASE_ID="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"

# --- variant: the small CPU build when its index is reachable (torch: predictor only).
if [[ "$TARGET" == web ]]; then
    VARIANT=cpu
elif [[ -n "$TARGET" && "$TARGET" != light ]]; then
    log "TARGET must be empty (the predictor), light (no torch) or web, not '$TARGET'"
    exit 1
fi
index_answers() {
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)
EOF
}
if [[ "$VARIANT" == auto ]]; then
    if [[ -n "$TORCH_INDEX_URL" ]] || index_answers "$CPU_INDEX"; then
        VARIANT=cpu
    else
        VARIANT=gpu
        log "VARIANT=auto: $CPU_INDEX is unreachable, building the gpu variant" \
            "(CUDA torch from PyPI, ~6 GB); set VARIANT/TORCH_INDEX_URL to choose"
    fi
fi
case "$VARIANT" in
    cpu | gpu) ;;
    *) log "VARIANT must be cpu, gpu or auto, not '$VARIANT'"; exit 1 ;;
esac

# --- the CA bundle pip in the builder stage trusts (never in the runtime stage).
pip_cert() {
    local c="${PIP_CERT:-}"
    if [[ -z "$c" ]] && command -v pip3 >/dev/null 2>&1; then
        c="$(pip3 config get global.cert 2>/dev/null || true)"
    fi
    printf '%s\n' "${c:-/etc/ssl/certs/ca-certificates.crt}"
}
CA_BUNDLE="${CA_BUNDLE:-$(pip_cert)}"
mkdir -p "$ROOT/.build"
if [[ -f "$CA_BUNDLE" ]]; then
    cp "$CA_BUNDLE" "$ROOT/.build/ca.crt"
else
    rm -f "$ROOT/.build/ca.crt"
    log "no CA bundle at $CA_BUNDLE: pip in the build uses the base image's"
fi

# --- source hash: what the image is made of.
source_hash() {
    {
        printf 'variant=%s\nindex=%s\nbase=%s\n' "$VARIANT" "$TORCH_INDEX_URL" "$BASE_ID"
        [[ -z "$TARGET" ]] || printf 'target=%s\n' "$TARGET"
        [[ "$SERVER_EXTRAS" == server ]] || printf 'extras=%s\n' "$SERVER_EXTRAS"
        local paths=() p
        for p in Dockerfile .dockerignore pyproject.toml constraints.txt README.md LICENSE \
                 scripts/image-venv.sh predictor client; do
            [[ -e "$p" ]] && paths+=("$p")
        done
        find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' \
            ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    } | sha256sum | cut -c1-64
}
HASH="$(source_hash)"
HASH_TAG="$IMAGE:src-${HASH:0:16}"

if [[ "$FORCE" != 1 ]] && docker image inspect "$HASH_TAG" >/dev/null 2>&1; then
    log "$HASH_TAG is up to date; not rebuilding"
else
    log "building $HASH_TAG (${TARGET:-predictor}, variant $VARIANT, base $BASE_IMAGE)"
    start=$SECONDS
    target_args=(--target "${TARGET:-runtime}")
    # Classic builder: BuildKit/buildx may be missing, and nothing here needs it.
    DOCKER_BUILDKIT=0 docker build --force-rm "${target_args[@]}" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg VARIANT="$VARIANT" \
        --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        --build-arg SERVER_EXTRAS="$SERVER_EXTRAS" \
        --label io.kserve-detector.source-hash="$HASH" \
        --label org.opencontainers.image.base.name="$BASE_IMAGE" \
        -t "$HASH_TAG" "$ROOT" >&2
    log "built in $((SECONDS - start))s"
fi
docker tag "$HASH_TAG" "$IMAGE:$TAG"

if [[ "$KEEP_OLD" != 1 ]]; then
    # Older source tags only pin layers nothing uses; the build cache stays.
    docker image ls "$IMAGE" --format '{{.Repository}}:{{.Tag}}' \
        | grep -F "$IMAGE:src-" | grep -vxF "$HASH_TAG" \
        | xargs -r docker rmi >/dev/null 2>&1 || true
fi

docker image ls "$IMAGE:$TAG" --format 'image: {{.Repository}}:{{.Tag}} {{.Size}}' >&2
printf '%s\n' "$IMAGE:$TAG"
