#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end path on a local kind cluster: create the cluster, install cert-manager
# and KServe from their release manifests, build the images and load them into kind,
# deploy the detector with a kustomize overlay and the web app (manifests/app), then
# run the e2e suite against them through port-forwards on 127.0.0.1.
#
# Usage: scripts/kind-e2e.sh [--dry-run] up|deploy|e2e|down|all
#
#   up      create the kind cluster if missing; install cert-manager, KServe
#           (Standard mode) and, with KNATIVE=1, Knative Serving + Kourier; with
#           KEDA=1, KEDA and a Prometheus for it
#   deploy  build the predictor and web images, kind load them, apply the overlay,
#           wait for Ready, apply the web app, wait for its rollout
#   e2e     port-forward the predictor (REST, gRPC) and the web app; run pytest on
#           tests/e2e, then the app's /healthz and /api/detect with one picture;
#           with the kind-keda overlay, ask Prometheus the ScaledObject's query
#   down    delete the kind cluster
#   all     up, deploy, e2e (then down when TEARDOWN=1)
#
# Every step is safe to re-run. --dry-run (or DRY_RUN=1) prints the commands in
# order without running docker, kind or kubectl. On failure the script dumps the
# InferenceService status, pod logs and events (also saved under ARTIFACTS_DIR).
# kubectl always runs with --context "$KUBE_CONTEXT", so it never touches a
# cluster other than the kind one.
#
# Environment (defaults in brackets): CLUSTER_NAME [kserve-detector],
# NAMESPACE [kserve-detector], ISVC_NAME / MODEL_NAME [detector],
# IMAGE [kserve-detector:0.1.0], WEB_IMAGE [kserve-detector-web:0.1.0],
# OVERLAY [kind; kind-keda with KEDA=1, else kind-knative with KNATIVE=1;
# kind-runtime deploys through the ServingRuntime, kind-grpc puts gRPC first; an
# overlay X with a kind-X variant runs that], LOCAL_PORT [18080],
# LOCAL_GRPC_PORT [18081], LOCAL_WEB_PORT [18000], LOCAL_PROMETHEUS_PORT [19090],
# WAIT_TIMEOUT [600s], WEBHOOK_RETRIES [6] x WEBHOOK_RETRY_DELAY [10 s],
# CERT_MANAGER_API_RETRIES [24] x CERT_MANAGER_API_RETRY_DELAY [5 s],
# PROMETHEUS_RETRIES [12] x PROMETHEUS_RETRY_DELAY [5 s],
# DOCKER_BUILD_ARGS, SKIP_BUILD=1, WEB=0 (no web app), KNATIVE=1, KEDA=1,
# TEARDOWN=1, DRY_RUN=1, PYTEST [.venv/bin/pytest], PYTHON [.venv/bin/python],
# ARTIFACTS_DIR [out/kind-e2e], and the *_VERSION pins.
#
# Needs: docker, kind (v0.30.0), kubectl, curl, network access to GitHub releases,
# and the project's virtualenv (make install) for pytest.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- names (override from the environment) ----------------------------------------
CLUSTER_NAME="${CLUSTER_NAME:-kserve-detector}"
KIND_CONFIG="${KIND_CONFIG:-$ROOT_DIR/kind-config.yaml}"
KUBE_CONTEXT="${KUBE_CONTEXT:-kind-$CLUSTER_NAME}"
NAMESPACE="${NAMESPACE:-kserve-detector}"
ISVC_NAME="${ISVC_NAME:-detector}"
MODEL_NAME="${MODEL_NAME:-detector}"
IMAGE="${IMAGE:-kserve-detector:0.1.0}"
WEB_IMAGE="${WEB_IMAGE:-kserve-detector-web:0.1.0}"
WEB_NAME="detector-web"
DOCKER_BUILD_ARGS="${DOCKER_BUILD_ARGS:-}"
OVERLAY="${OVERLAY:-}"
LOCAL_PORT="${LOCAL_PORT:-18080}"
LOCAL_GRPC_PORT="${LOCAL_GRPC_PORT:-18081}"
LOCAL_WEB_PORT="${LOCAL_WEB_PORT:-18000}"
LOCAL_PROMETHEUS_PORT="${LOCAL_PROMETHEUS_PORT:-19090}"
GRPC_PORT="${GRPC_PORT:-8081}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-600s}"
# Bounded retries while KServe's webhooks come up (attempts, seconds between).
WEBHOOK_RETRIES="${WEBHOOK_RETRIES:-6}"
WEBHOOK_RETRY_DELAY="${WEBHOOK_RETRY_DELAY:-10}"
# How long to wait for cert-manager's API after its Deployments are Available: 2
# minutes, polled every 5 s as `cmctl check api` polls.
CERT_MANAGER_API_RETRIES="${CERT_MANAGER_API_RETRIES:-24}"
CERT_MANAGER_API_RETRY_DELAY="${CERT_MANAGER_API_RETRY_DELAY:-5}"
# How long e2e asks Prometheus for the ScaledObject's metric (attempts, seconds between).
PROMETHEUS_RETRIES="${PROMETHEUS_RETRIES:-12}"
PROMETHEUS_RETRY_DELAY="${PROMETHEUS_RETRY_DELAY:-5}"
PYTEST="${PYTEST:-$ROOT_DIR/.venv/bin/pytest}"
PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
E2E_TESTS="${E2E_TESTS:-tests/e2e}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-$ROOT_DIR/out/kind-e2e}"
# Fixed depth below ROOT_DIR: the generated kustomizations refer to the manifests by
# a relative path (kustomize refuses absolute ones).
DEPLOY_DIR="$ROOT_DIR/out/kind-e2e-deploy"
APP_DIR="$ROOT_DIR/out/kind-e2e-app"

# --- switches -----------------------------------------------------------------------
DRY_RUN="${DRY_RUN:-0}"
KNATIVE="${KNATIVE:-0}"
KEDA="${KEDA:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TEARDOWN="${TEARDOWN:-0}"
WEB="${WEB:-1}"

# --- pinned versions (KServe's own dependency pins, Aug 2026) -----------------------
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.17.0}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
KNATIVE_VERSION="${KNATIVE_VERSION:-1.21.1}"
KOURIER_VERSION="${KOURIER_VERSION:-$KNATIVE_VERSION}"
# Not KServe's 2.18.0 pin: KEDA 2.18.0 has CVE-2025-68476, fixed in 2.18.3
# (kedacore/keda v2.18.3 CHANGELOG.md; KServe v0.20.0 kserve-deps.env flags it).
KEDA_VERSION="${KEDA_VERSION:-2.18.3}"

GH="https://github.com"
CERT_MANAGER_URL="${CERT_MANAGER_URL:-$GH/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml}"
KSERVE_CRDS_URL="${KSERVE_CRDS_URL:-$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-crds.yaml}"
KSERVE_URL="${KSERVE_URL:-$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml}"
KSERVE_RESOURCES_URL="${KSERVE_RESOURCES_URL:-$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml}"
KNATIVE_BASE_URL="$GH/knative/serving/releases/download/knative-v$KNATIVE_VERSION"
# net-kourier moved from the knative to the knative-extensions organisation.
KOURIER_URL="${KOURIER_URL:-$GH/knative-extensions/net-kourier/releases/download/knative-v$KOURIER_VERSION/kourier.yaml}"
KEDA_URL="${KEDA_URL:-$GH/kedacore/keda/releases/download/v$KEDA_VERSION/keda-$KEDA_VERSION.yaml}"

# --- state for the exit trap ---------------------------------------------------------
DIAGNOSE=0          # set once there is a cluster worth dumping diagnostics from
COMMAND=""

# log, die, is_true, is_dry_run, run, retry, need, port_forward, stop_port_forwards,
# image_registry, load_image_archive, write_kustomization
# shellcheck source=k8s-lib.sh disable=SC1091
source "$ROOT_DIR/scripts/k8s-lib.sh"
# install_cert_manager, install_knative, install_keda, install_kind_prometheus,
# install_kserve
# shellcheck source=kind-install.sh disable=SC1091
source "$ROOT_DIR/scripts/kind-install.sh"
# build_image, load_image, apply_overlay, wait_ready, deploy_app
# shellcheck source=kind-deploy.sh disable=SC1091
source "$ROOT_DIR/scripts/kind-deploy.sh"
# check_web, check_keda_signal, dump_diagnostics
# shellcheck source=kind-checks.sh disable=SC1091
source "$ROOT_DIR/scripts/kind-checks.sh"

# kind_overlays: the overlays made for kind (kind, kind-*), one per line.
kind_overlays() {
    local dir
    for dir in "$ROOT_DIR"/manifests/overlays/kind "$ROOT_DIR"/manifests/overlays/kind-*; do
        [[ -f "$dir/kustomization.yaml" ]] && basename "$dir"
    done
}

# OVERLAY, defaulted from KEDA / KNATIVE, and always a kind variant: the others name no
# weights, ask for 2 CPUs and pull their image, so on kind the server exits (empty
# model folder) or the pod never schedules. OVERLAY=grpc runs kind-grpc.
choose_overlay() {
    if [[ -z "$OVERLAY" ]]; then
        OVERLAY=kind
        if is_true "$KEDA"; then
            OVERLAY=kind-keda
        elif knative_mode; then
            OVERLAY=kind-knative
        fi
    fi
    [[ -d "$ROOT_DIR/manifests/overlays/$OVERLAY" ]] || die "no overlay manifests/overlays/$OVERLAY"
    if [[ "$OVERLAY" != kind && "$OVERLAY" != kind-* ]]; then
        if [[ -d "$ROOT_DIR/manifests/overlays/kind-$OVERLAY" ]]; then
            echo "OVERLAY=$OVERLAY: deploying its kind variant, kind-$OVERLAY" >&2
            OVERLAY="kind-$OVERLAY"
        else
            die "overlay '$OVERLAY' is not made for kind (no weights, no local image, too large); use one of: $(kind_overlays | tr '\n' ' ')"
        fi
    fi
}

usage() {
    sed -n '3,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# kubectl pinned to the kind cluster's context.
k() { run kubectl --context "$KUBE_CONTEXT" "$@"; }

# Same, for queries whose output the script reads: never run in a dry run.
k_query() { kubectl --context "$KUBE_CONTEXT" "$@"; }

cluster_exists() {
    is_dry_run && return 1
    local clusters
    # Captured first: `grep -q` quitting early would SIGPIPE kind under pipefail.
    clusters="$(kind get clusters 2>/dev/null || true)"
    grep -qx "$CLUSTER_NAME" <<<"$clusters"
}

knative_mode() { is_true "$KNATIVE"; }
web_enabled() { is_true "$WEB"; }
# The overlay deployed runs in Knative mode (what the port-forwards depend on).
overlay_is_knative() { [[ "$OVERLAY" == *knative* ]]; }
overlay_is_keda() { [[ "$OVERLAY" == *keda* ]]; }

# Idempotent, unlike a bare `kubectl create namespace`.
ensure_namespace() {
    if is_dry_run || ! k_query get namespace "$1" >/dev/null 2>&1; then
        k create namespace "$1"
    fi
}

# --- up --------------------------------------------------------------------------------
create_cluster() {
    log "cluster: kind cluster '$CLUSTER_NAME' ($KIND_CONFIG)"
    if cluster_exists; then
        echo "cluster '$CLUSTER_NAME' already exists; reusing it"
    else
        run kind create cluster --name "$CLUSTER_NAME" --config "$KIND_CONFIG" --wait 120s
    fi
    DIAGNOSE=1
    check_kubernetes_version
}

# KServe v0.20 needs Kubernetes >= 1.32; catch an old reused cluster early.
check_kubernetes_version() {
    is_dry_run && return 0
    local minor
    minor="$(k_query get --raw /version | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')"
    [[ -n "$minor" ]] || die "could not read the cluster's Kubernetes version"
    ((minor >= 32)) || die "cluster '$CLUSTER_NAME' runs Kubernetes 1.$minor; KServe needs >= 1.32 (run: $0 down)"
}

cmd_up() {
    need docker kind kubectl
    create_cluster
    install_cert_manager
    if knative_mode; then
        install_knative
    fi
    if is_true "$KEDA"; then
        install_keda
        install_kind_prometheus
    fi
    install_kserve
    log "cluster ready: kubectl --context $KUBE_CONTEXT get pods -A"
}

# --- deploy ----------------------------------------------------------------------------
cmd_deploy() {
    need docker kind kubectl
    build_image runtime "$IMAGE"
    if web_enabled; then
        build_image web "$WEB_IMAGE"
    fi
    load_image "$IMAGE"
    if web_enabled; then
        load_image "$WEB_IMAGE"
    fi
    DIAGNOSE=1
    apply_overlay
    wait_ready
    if web_enabled; then
        deploy_app
    fi
}

# --- e2e -------------------------------------------------------------------------------
predictor_pod() {
    if is_dry_run; then
        echo POD
        return 0
    fi
    k_query -n "$NAMESPACE" get pods \
        -l "serving.kserve.io/inferenceservice=$ISVC_NAME,component=predictor" \
        --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}' \
        | awk '{print $1}'
}

# service_port NAME: the predictor Service's port of that name. In Standard mode
# KServe makes one per container port, the first on 80 (v0.20.0,
# reconcilers/service/service_reconciler.go).
service_port() {
    if is_dry_run; then
        echo "SERVICE_PORT_$1"
        return 0
    fi
    k_query -n "$NAMESPACE" get "svc/$ISVC_NAME-predictor" \
        -o jsonpath="{.spec.ports[?(@.name==\"$1\")].port}"
}

# forward TARGET LOCAL:REMOTE: a background port-forward bound to 127.0.0.1 only.
forward() {
    port_forward "${2%%:*}" "$ARTIFACTS_DIR/port-forward.log" \
        kubectl --context "$KUBE_CONTEXT" -n "$NAMESPACE" port-forward --address 127.0.0.1 "$1" "$2"
}

forward_predictor() {
    local pod http grpc
    pod="$(predictor_pod)"
    [[ -n "$pod" ]] || die "no running predictor pod for InferenceService '$ISVC_NAME' in '$NAMESPACE'"
    log "port-forward: predictor to 127.0.0.1:$LOCAL_PORT (REST) and :$LOCAL_GRPC_PORT (gRPC)"
    if overlay_is_knative; then
        # A Knative predictor Service is an ExternalName to the ingress, and a
        # revision serves one port: talk to the pod, where both listen.
        forward "pod/$pod" "$LOCAL_PORT:8080"
        forward "pod/$pod" "$LOCAL_GRPC_PORT:$GRPC_PORT"
        return 0
    fi
    # Standard mode: both through the Service, as a client in the cluster would.
    http="$(service_port http1)"
    grpc="$(service_port h2c)"
    [[ -n "$http" ]] || die "Service $ISVC_NAME-predictor has no http1 port"
    [[ -n "$grpc" ]] || die "Service $ISVC_NAME-predictor has no h2c port, so gRPC is unreachable through it: the predictor must declare containerPort $GRPC_PORT named h2c"
    forward "svc/$ISVC_NAME-predictor" "$LOCAL_PORT:$http"
    forward "svc/$ISVC_NAME-predictor" "$LOCAL_GRPC_PORT:$grpc"
}

cmd_e2e() {
    need kubectl
    if web_enabled; then
        need curl
    fi
    if ! is_dry_run && [[ ! -x "$PYTEST" ]]; then
        die "$PYTEST not found: create the virtualenv first (make install) or set PYTEST"
    fi
    DIAGNOSE=1
    forward_predictor
    log "test: pytest $E2E_TESTS against http://127.0.0.1:$LOCAL_PORT"
    (
        cd "$ROOT_DIR"
        run env \
            E2E_BASE_URL="http://127.0.0.1:$LOCAL_PORT" \
            E2E_GRPC_TARGET="127.0.0.1:$LOCAL_GRPC_PORT" \
            E2E_GRPC_URL="127.0.0.1:$LOCAL_GRPC_PORT" \
            E2E_MODEL_NAME="$MODEL_NAME" \
            E2E_KUBE=1 \
            E2E_KUBE_CONTEXT="$KUBE_CONTEXT" \
            E2E_NAMESPACE="$NAMESPACE" \
            E2E_ISVC_NAME="$ISVC_NAME" \
            "$PYTEST" "$E2E_TESTS"
    )
    if web_enabled; then
        check_web
    fi
    if overlay_is_keda; then
        check_keda_signal
    fi
    stop_port_forwards
}

# --- down ------------------------------------------------------------------------------
cmd_down() {
    need kind
    log "down: delete kind cluster '$CLUSTER_NAME'"
    run kind delete cluster --name "$CLUSTER_NAME"
}

on_exit() {
    local rc=$?
    stop_port_forwards
    rm -f "$ARTIFACTS_DIR/image.tar"
    if ((rc != 0)) && ! is_dry_run; then
        if ((DIAGNOSE == 1)); then
            dump_diagnostics || true
        fi
        if [[ "$COMMAND" == all ]] && is_true "$TEARDOWN"; then
            kind delete cluster --name "$CLUSTER_NAME" || true
        elif ((DIAGNOSE == 1)); then
            echo "kind-e2e: failed; the cluster is kept for inspection ($0 down removes it)" >&2
        fi
    fi
    exit "$rc"
}

main() {
    local arg
    for arg in "$@"; do
        case "$arg" in
            --dry-run | -n) DRY_RUN=1 ;;
            -h | --help | help)
                usage
                exit 0
                ;;
            up | deploy | e2e | down | all)
                [[ -z "$COMMAND" ]] || die "one subcommand at a time (got '$COMMAND' and '$arg')"
                COMMAND="$arg"
                ;;
            *)
                usage >&2
                printf 'kind-e2e: error: unknown argument %s\n' "'$arg'" >&2
                exit 2
                ;;
        esac
    done
    if [[ -z "$COMMAND" ]]; then
        usage >&2
        exit 2
    fi
    choose_overlay
    local image
    for image in "$IMAGE" "$WEB_IMAGE"; do
        [[ "${image##*/}" == *:* ]] || die "IMAGE and WEB_IMAGE must carry a tag (name:tag), got '$image'"
    done
    if is_dry_run; then
        echo "dry run: printing the steps of '$COMMAND'; nothing is executed"
    fi

    trap on_exit EXIT
    case "$COMMAND" in
        up) cmd_up ;;
        deploy) cmd_deploy ;;
        e2e) cmd_e2e ;;
        down) cmd_down ;;
        all)
            cmd_up
            cmd_deploy
            cmd_e2e
            if is_true "$TEARDOWN"; then
                cmd_down
            fi
            ;;
        *) die "unknown subcommand '$COMMAND'" ;;
    esac
}

main "$@"
