#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end path on a local kind cluster: create the cluster, install cert-manager
# and KServe from their release manifests, build the image and load it into kind,
# deploy the detector with the `kind` kustomize overlay, then run the e2e test suite
# against it through a port-forward on 127.0.0.1.
#
# Usage: scripts/kind-e2e.sh [--dry-run] up|deploy|e2e|down|all
#
#   up      create the kind cluster if missing; install cert-manager, KServe
#           (Standard mode) and, with KNATIVE=1, Knative Serving + Kourier
#   deploy  docker build, kind load, apply the overlay, wait for Ready
#   e2e     port-forward the predictor, run pytest on tests/e2e
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
# IMAGE [kserve-detector:0.1.0], OVERLAY [kind, or kind-knative with KNATIVE=1],
# LOCAL_PORT [18080], LOCAL_GRPC_PORT [18081], WAIT_TIMEOUT [600s],
# DOCKER_BUILD_ARGS, SKIP_BUILD=1, KNATIVE=1, KEDA=1, TEARDOWN=1, DRY_RUN=1,
# PYTEST [.venv/bin/pytest], ARTIFACTS_DIR [out/kind-e2e], and the *_VERSION pins.
#
# Needs: docker, kind (v0.30.0), kubectl, network access to GitHub releases, and
# the project's virtualenv (make install) for pytest.
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
DOCKER_BUILD_ARGS="${DOCKER_BUILD_ARGS:-}"
OVERLAY="${OVERLAY:-}"
LOCAL_PORT="${LOCAL_PORT:-18080}"
LOCAL_GRPC_PORT="${LOCAL_GRPC_PORT:-18081}"
GRPC_PORT="${GRPC_PORT:-8081}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-600s}"
PYTEST="${PYTEST:-$ROOT_DIR/.venv/bin/pytest}"
E2E_TESTS="${E2E_TESTS:-tests/e2e}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-$ROOT_DIR/out/kind-e2e}"
# Fixed depth below ROOT_DIR: the generated kustomization refers to the overlay by
# a relative path (kustomize refuses absolute ones).
DEPLOY_DIR="$ROOT_DIR/out/kind-e2e-deploy"

# --- switches -----------------------------------------------------------------------
DRY_RUN="${DRY_RUN:-0}"
KNATIVE="${KNATIVE:-0}"
KEDA="${KEDA:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TEARDOWN="${TEARDOWN:-0}"

# --- pinned versions (KServe's own dependency pins, Aug 2026) -----------------------
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.17.0}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
KNATIVE_VERSION="${KNATIVE_VERSION:-1.21.1}"
KOURIER_VERSION="${KOURIER_VERSION:-$KNATIVE_VERSION}"
KEDA_VERSION="${KEDA_VERSION:-2.18.0}"

GH="https://github.com"
CERT_MANAGER_URL="${CERT_MANAGER_URL:-$GH/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml}"
KSERVE_URL="${KSERVE_URL:-$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml}"
KSERVE_RESOURCES_URL="${KSERVE_RESOURCES_URL:-$GH/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml}"
KNATIVE_BASE_URL="$GH/knative/serving/releases/download/knative-v$KNATIVE_VERSION"
KOURIER_URL="${KOURIER_URL:-$GH/knative/net-kourier/releases/download/knative-v$KOURIER_VERSION/kourier.yaml}"
KEDA_URL="${KEDA_URL:-$GH/kedacore/keda/releases/download/v$KEDA_VERSION/keda-$KEDA_VERSION.yaml}"

# --- state for the exit trap ---------------------------------------------------------
DIAGNOSE=0          # set once there is a cluster worth dumping diagnostics from
COMMAND=""

# log, die, is_true, is_dry_run, run, retry, need, port_forward, stop_port_forwards
# shellcheck source=k8s-lib.sh disable=SC1091
source "$ROOT_DIR/scripts/k8s-lib.sh"

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

install_cert_manager() {
    log "cert-manager $CERT_MANAGER_VERSION"
    k apply -f "$CERT_MANAGER_URL"
    k -n cert-manager wait --for=condition=Available deployment --all --timeout=300s
}

install_knative() {
    log "knative serving $KNATIVE_VERSION + kourier $KOURIER_VERSION"
    k apply -f "$KNATIVE_BASE_URL/serving-crds.yaml"
    k wait --for=condition=Established crd/services.serving.knative.dev --timeout=60s
    k apply -f "$KNATIVE_BASE_URL/serving-core.yaml"
    k apply -f "$KOURIER_URL"
    k -n knative-serving patch configmap/config-network --type merge \
        -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
    # The image exists only on the kind node (docker.io/library/kserve-detector):
    # Knative must not try to resolve its tag to a digest in a registry.
    k -n knative-serving patch configmap/config-deployment --type merge \
        -p '{"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local,docker.io"}}'
    k -n knative-serving wait --for=condition=Available deployment --all --timeout=300s
    k -n kourier-system wait --for=condition=Available deployment --all --timeout=300s
}

install_keda() {
    log "keda $KEDA_VERSION"
    k apply --server-side --force-conflicts -f "$KEDA_URL"
    k -n keda wait --for=condition=Available deployment --all --timeout=300s
}

install_kserve() {
    local mode=Standard
    if knative_mode; then
        mode=Knative
    fi
    log "kserve $KSERVE_VERSION (default deployment mode: $mode)"
    # Server-side apply: the CRDs are too large for the last-applied annotation.
    k apply --server-side --force-conflicts -f "$KSERVE_URL"
    k -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout=300s
    # The cluster resources go through KServe's webhook, whose certificate
    # cert-manager may still be issuing.
    retry 6 10 k apply --server-side --force-conflicts -f "$KSERVE_RESOURCES_URL"
    k -n kserve patch configmap/inferenceservice-config --type merge \
        -p "{\"data\":{\"deploy\":\"{\\\"defaultDeploymentMode\\\":\\\"$mode\\\"}\"}}"
    if knative_mode; then
        # Kourier instead of Istio: KServe must not create Istio VirtualServices.
        disable_istio_virtual_host
    fi
}

disable_istio_virtual_host() {
    local from='"disableIstioVirtualHost": false' to='"disableIstioVirtualHost": true'
    if is_dry_run; then
        printf "+ kubectl --context %s -n kserve get configmap inferenceservice-config -o yaml | sed 's/%s/%s/' | kubectl --context %s apply -f -\n" \
            "$KUBE_CONTEXT" "$from" "$to" "$KUBE_CONTEXT"
        return 0
    fi
    k_query -n kserve get configmap inferenceservice-config -o yaml \
        | sed "s/$from/$to/" \
        | k_query apply -f -
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
    fi
    install_kserve
    log "cluster ready: kubectl --context $KUBE_CONTEXT get pods -A"
}

# --- deploy ----------------------------------------------------------------------------
build_image() {
    local extra=()
    if [[ -n "$DOCKER_BUILD_ARGS" ]]; then
        read -r -a extra <<<"$DOCKER_BUILD_ARGS"
    fi
    log "image build: $IMAGE"
    if is_true "$SKIP_BUILD"; then
        echo "SKIP_BUILD=1: using the existing local image $IMAGE"
        return 0
    fi
    run docker build ${extra[@]+"${extra[@]}"} -t "$IMAGE" "$ROOT_DIR"
}

load_image() {
    log "image load: $IMAGE into kind cluster '$CLUSTER_NAME'"
    run kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"
}

# The image's content id: a rebuild under the same tag must still roll the pods.
image_id() {
    if is_dry_run; then
        echo IMAGE_ID
        return 0
    fi
    docker image inspect --format '{{.Id}}' "$IMAGE"
}

# The overlay, in our namespace, with the image we just built (IMAGE may differ
# from the tag the manifests pin). The image id goes into a pod annotation (KServe
# copies predictor annotations onto the pods), so a new build under the same tag
# changes the pod template and rolls the Deployment.
write_deploy_kustomization() {
    local name="${IMAGE%:*}" tag="${IMAGE##*:}" id content
    id="$(image_id)"
    content="$(cat <<EOF
# Generated by scripts/kind-e2e.sh; safe to delete.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $NAMESPACE
resources:
  - ../../manifests/overlays/$OVERLAY
images:
  - name: kserve-detector
    newName: $name
    newTag: "$tag"
patches:
  - target:
      group: serving.kserve.io
      kind: InferenceService
    patch: |-
      - op: add
        path: /spec/predictor/annotations
        value:
          kserve-detector/image-id: "$id"
EOF
)"
    if is_dry_run; then
        printf '+ write %s/kustomization.yaml:\n%s\n' "$DEPLOY_DIR" "$content"
        return 0
    fi
    mkdir -p "$DEPLOY_DIR"
    printf '%s\n' "$content" >"$DEPLOY_DIR/kustomization.yaml"
}

apply_overlay() {
    log "apply: overlay '$OVERLAY' to namespace '$NAMESPACE'"
    if is_dry_run || ! k_query get namespace "$NAMESPACE" >/dev/null 2>&1; then
        k create namespace "$NAMESPACE"
    fi
    write_deploy_kustomization
    k apply -k "$DEPLOY_DIR"
}

wait_ready() {
    log "wait: InferenceService '$ISVC_NAME' Ready (timeout $WAIT_TIMEOUT)"
    k -n "$NAMESPACE" wait --for=condition=Ready "inferenceservice/$ISVC_NAME" --timeout="$WAIT_TIMEOUT"
}

cmd_deploy() {
    need docker kind kubectl
    build_image
    load_image
    DIAGNOSE=1
    apply_overlay
    wait_ready
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

service_port() {
    if is_dry_run; then
        echo SERVICE_PORT
        return 0
    fi
    k_query -n "$NAMESPACE" get "svc/$ISVC_NAME-predictor" -o jsonpath='{.spec.ports[0].port}'
}

# forward TARGET LOCAL:REMOTE: a background port-forward bound to 127.0.0.1 only.
forward() {
    port_forward "${2%%:*}" "$ARTIFACTS_DIR/port-forward.log" \
        kubectl --context "$KUBE_CONTEXT" -n "$NAMESPACE" port-forward --address 127.0.0.1 "$1" "$2"
}

cmd_e2e() {
    need kubectl
    if ! is_dry_run && [[ ! -x "$PYTEST" ]]; then
        die "$PYTEST not found: create the virtualenv first (make install) or set PYTEST"
    fi
    DIAGNOSE=1
    local pod http_target
    pod="$(predictor_pod)"
    [[ -n "$pod" ]] || die "no running predictor pod for InferenceService '$ISVC_NAME' in '$NAMESPACE'"
    log "port-forward: predictor to 127.0.0.1:$LOCAL_PORT (REST) and :$LOCAL_GRPC_PORT (gRPC)"
    if knative_mode; then
        # A Knative predictor Service is an ExternalName to the ingress; talk to
        # the revision's pod directly.
        http_target="pod/$pod"
        forward "$http_target" "$LOCAL_PORT:8080"
    else
        http_target="svc/$ISVC_NAME-predictor"
        forward "$http_target" "$LOCAL_PORT:$(service_port)"
    fi
    # The Service exposes one port (REST); gRPC is reached on the pod itself.
    forward "pod/$pod" "$LOCAL_GRPC_PORT:$GRPC_PORT"

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
    stop_port_forwards
}

# --- down ------------------------------------------------------------------------------
cmd_down() {
    need kind
    log "down: delete kind cluster '$CLUSTER_NAME'"
    run kind delete cluster --name "$CLUSTER_NAME"
}

# --- diagnostics -----------------------------------------------------------------------
dump_diagnostics() {
    local file selector="serving.kserve.io/inferenceservice=$ISVC_NAME"
    mkdir -p "$ARTIFACTS_DIR"
    file="$ARTIFACTS_DIR/diagnostics-$(date +%Y%m%d-%H%M%S).txt"
    echo "==> diagnostics (also in $file)" >&2
    {
        local cmd
        for cmd in \
            "-n $NAMESPACE get inferenceservice $ISVC_NAME -o yaml" \
            "-n $NAMESPACE get pods,svc,deployments,hpa -o wide" \
            "-n $NAMESPACE describe pods -l $selector" \
            "-n $NAMESPACE logs -l $selector --all-containers --prefix --tail=300" \
            "-n $NAMESPACE logs -l $selector --all-containers --prefix --tail=100 --previous" \
            "-n $NAMESPACE get events --sort-by=.lastTimestamp" \
            "-n kserve logs deployment/kserve-controller-manager --tail=200"; do
            echo "---- kubectl $cmd"
            # Word splitting is intended: each entry is a kubectl argument list.
            # shellcheck disable=SC2086
            kubectl --context "$KUBE_CONTEXT" $cmd 2>&1 || true
        done
    } | tee "$file" >&2
}

on_exit() {
    local rc=$?
    stop_port_forwards
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
    if [[ -z "$OVERLAY" ]]; then
        OVERLAY=kind
        if knative_mode; then
            OVERLAY=kind-knative
        fi
    fi
    [[ -d "$ROOT_DIR/manifests/overlays/$OVERLAY" ]] || die "no overlay manifests/overlays/$OVERLAY"
    [[ "${IMAGE##*/}" == *:* ]] || die "IMAGE must carry a tag (name:tag), got '$IMAGE'"
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
