#!/usr/bin/env bash
# Helpers sourced by scripts/kind-e2e.sh: logging, dry-run aware command runner,
# retries, tool checks, background port-forwards, image registries and loading
# images into kind. Not meant to run on its own.
#
# Callers set DRY_RUN (1/true/yes = print commands instead of running them) and
# may read PORT_FORWARD_PIDS (space-separated) in their exit trap.

DRY_RUN="${DRY_RUN:-0}"
PORT_FORWARD_PIDS="${PORT_FORWARD_PIDS:-}"
LIB_PREFIX="${LIB_PREFIX:-$(basename "$0" .sh)}"

log() { printf '==> %s\n' "$*"; }
die() { printf '%s: error: %s\n' "$LIB_PREFIX" "$*" >&2; exit 1; }
is_true() { [[ "$1" == 1 || "$1" == true || "$1" == yes ]]; }
is_dry_run() { is_true "$DRY_RUN"; }

# The arguments as one line a shell would read back the same way.
quote_args() {
    local arg out="" sq="'"
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out="$out $arg"
        else
            out="$out '${arg//$sq/$sq\\$sq$sq}'"
        fi
    done
    printf '%s' "${out# }"
}

# Prints a command, then runs it. In a dry run it only prints it, on stdout, so
# the plan can be read (or tested) without any tool installed.
run() {
    if is_dry_run; then
        printf '+ %s\n' "$(quote_args "$@")"
        return 0
    fi
    printf '+ %s\n' "$(quote_args "$@")" >&2
    "$@"
}

# retry ATTEMPTS DELAY_SECONDS COMMAND...: for webhooks that take a moment to serve.
retry() {
    local attempts="$1" delay="$2" i
    shift 2
    for ((i = 1; i <= attempts; i++)); do
        if "$@"; then
            return 0
        fi
        if is_dry_run; then
            return 0
        fi
        if ((i < attempts)); then
            printf 'retrying in %ss (%d/%d)\n' "$delay" "$i" "$attempts" >&2
            sleep "$delay"
        fi
    done
    return 1
}

# need TOOL...: fail early, naming the missing tool (not checked in a dry run).
need() {
    if is_dry_run; then
        return 0
    fi
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH (needed for this step)"
    done
}

# port_forward LOCAL_PORT LOG_FILE COMMAND...: runs a `kubectl port-forward` COMMAND
# in the background and waits (30 s at most) until 127.0.0.1:LOCAL_PORT accepts
# connections. The PID is added to PORT_FORWARD_PIDS for stop_port_forwards.
port_forward() {
    local local_port="$1" log_file="$2" pid i
    shift 2
    if is_dry_run; then
        printf '+ %s &\n' "$(quote_args "$@")"
        return 0
    fi
    printf '+ %s &\n' "$(quote_args "$@")" >&2
    mkdir -p "$(dirname "$log_file")"
    "$@" >>"$log_file" 2>&1 &
    pid=$!
    PORT_FORWARD_PIDS="$PORT_FORWARD_PIDS $pid"
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || die "port-forward exited (see $log_file)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$local_port") 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    die "port-forward did not open 127.0.0.1:$local_port within 30s (see $log_file)"
}

stop_port_forwards() {
    local pid
    for pid in $PORT_FORWARD_PIDS; do
        kill "$pid" 2>/dev/null || true
    done
    PORT_FORWARD_PIDS=""
}

# image_registry REF: the registry Knative sees in an image reference. Knative's tag
# resolver compares go-containerregistry's parsed registry with its
# registries-skipping-tag-resolving list (knative/serving pkg/reconciler/revision/
# resolve.go): the first path component is a registry only when it holds a '.' or
# ':' (pkg/name/repository.go), anything else is Docker Hub, and "docker.io" reads
# as "index.docker.io" (pkg/name/registry.go).
image_registry() {
    local ref="$1" first
    first="${ref%%/*}"
    if [[ "$ref" != */* || ("$first" != *.* && "$first" != *:*) || "$first" == docker.io ]]; then
        printf 'index.docker.io\n'
    else
        printf '%s\n' "$first"
    fi
}

# load_image_archive IMAGE CLUSTER ARCHIVE: puts a local image on the kind nodes
# through a single-platform archive. `kind load docker-image` imports every manifest
# of the image's index, and fails on BuildKit's attestation manifests (and on
# platforms Docker never pulled) with "content digest ... not found"
# (kubernetes-sigs/kind#3795). Saving only the engine's platform avoids that; Docker
# before 28 has no `save --platform`, and no such index either.
load_image_archive() {
    local image="$1" cluster="$2" archive="$3" platform="" help=""
    if is_dry_run; then
        platform=PLATFORM
    else
        # Captured first: `grep -q` quitting early would SIGPIPE docker under pipefail.
        help="$(docker image save --help 2>/dev/null || true)"
        if grep -q -- '--platform' <<<"$help"; then
            platform="$(docker version --format '{{.Server.Os}}/{{.Server.Arch}}')"
        fi
    fi
    if ! is_dry_run; then
        mkdir -p "$(dirname "$archive")"
    fi
    if [[ -n "$platform" ]]; then
        run docker image save --platform "$platform" -o "$archive" "$image"
    else
        run docker image save -o "$archive" "$image"
    fi
    run kind load image-archive "$archive" --name "$cluster"
    run rm -f "$archive"
}

# write_kustomization DIR CONTENT: a generated kustomization (printed in a dry run).
write_kustomization() {
    if is_dry_run; then
        printf '+ write %s/kustomization.yaml:\n%s\n' "$1" "$2"
        return 0
    fi
    mkdir -p "$1"
    printf '%s\n' "$2" >"$1/kustomization.yaml"
}
