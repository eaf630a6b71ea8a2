#!/usr/bin/env bash
# What `scripts/kind-e2e.sh up` installs into the kind cluster: cert-manager, Knative
# Serving + Kourier, KEDA (with a Prometheus for it) and KServe, from their release
# manifests. Each step waits for what the next one needs (CRDs Established, webhooks
# served) as the upstream installers do; tests/k8s/test_kind_cluster_refusals.py runs
# it against a fake cluster that refuses what a real one refuses. Sourced by
# kind-e2e.sh, whose settings (the *_URL and *_VERSION pins, IMAGE, KUBE_CONTEXT,
# WEBHOOK_RETRIES ...) and helpers (k, k_query, ensure_namespace, knative_mode) it
# uses. Not meant to run on its own.
# shellcheck disable=SC2154  # the settings are assigned by kind-e2e.sh

install_cert_manager() {
    log "cert-manager $CERT_MANAGER_VERSION"
    k apply -f "$CERT_MANAGER_URL"
    k -n cert-manager wait --for=condition=Available deployment --all --timeout=300s
    # Available is not ready: until cainjector has put the CA bundle into the webhook
    # configurations, cert-manager's webhook (failurePolicy Fail) fails every request
    # on cert-manager.io objects with "x509: certificate signed by unknown authority",
    # kserve.yaml's Issuer and Certificates included. Wait as `cmctl check api --wait`
    # does (cert-manager/cmctl v2.4.1 pkg/check/api/api.go, polling
    # cert-manager/cert-manager v1.17.0 pkg/util/cmapichecker/cmapichecker.go): until
    # a dry-run create of a cert-manager object gets through the webhook.
    log "cert-manager API: wait for a dry-run create to pass its webhook"
    retry "$CERT_MANAGER_API_RETRIES" "$CERT_MANAGER_API_RETRY_DELAY" cert_manager_api_answers \
        || die "cert-manager's API did not answer after $CERT_MANAGER_API_RETRIES tries (kubectl -n cert-manager logs deploy/cert-manager-cainjector)"
}

# A server-side dry run: admission webhooks run, nothing is stored.
cert_manager_api_answers() {
    k create --dry-run=server -o name -f - <<'EOF'
apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: kind-e2e-api-check
  namespace: cert-manager
spec:
  selfSigned: {}
EOF
}

install_knative() {
    log "knative serving $KNATIVE_VERSION + kourier $KOURIER_VERSION"
    k apply -f "$KNATIVE_BASE_URL/serving-crds.yaml"
    # Every Knative CRD (the queue-proxy Image that serving-core.yaml creates included)
    # carries knative.dev/crd-install=true (knative/serving knative-v1.21.1,
    # config/core/300-resources/*.yaml, 300-imagecache.yaml).
    k wait --for=condition=Established crd -l knative.dev/crd-install=true --timeout=60s
    k apply -f "$KNATIVE_BASE_URL/serving-core.yaml"
    k apply -f "$KOURIER_URL"
    # Before any patch: config-network and config-deployment are checked by the
    # webhook config.webhook.serving.knative.dev (failurePolicy Fail; knative/serving
    # knative-v1.21.1 config/core/webhooks/configmap-validation.yaml), which refuses
    # every change until its Deployment serves (knative/serving#13665).
    k -n knative-serving wait --for=condition=Available deployment --all --timeout=300s
    k -n kourier-system wait --for=condition=Available deployment --all --timeout=300s
    retry "$WEBHOOK_RETRIES" "$WEBHOOK_RETRY_DELAY" \
        k -n knative-serving patch configmap/config-network --type merge \
        -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
    # The image exists only on the kind node: Knative must not resolve its tag to a
    # digest in a registry. Knative compares the *parsed* registry, and a name with
    # none (kserve-detector:0.1.0) parses as index.docker.io, never "docker.io"
    # (image_registry in k8s-lib.sh; KServe's own Kourier setup lists
    # index.docker.io: hack/setup/infra/knative/templates/knative-serving-kourier.yaml).
    local skip="kind.local,ko.local,dev.local,index.docker.io" registry
    registry="$(image_registry "$IMAGE")"
    if [[ ",$skip," != *",$registry,"* ]]; then
        skip="$skip,$registry"
    fi
    retry "$WEBHOOK_RETRIES" "$WEBHOOK_RETRY_DELAY" \
        k -n knative-serving patch configmap/config-deployment --type merge \
        -p "{\"data\":{\"registries-skipping-tag-resolving\":\"$skip\"}}"
}

install_keda() {
    log "keda $KEDA_VERSION"
    k apply --server-side --force-conflicts -f "$KEDA_URL"
    k -n keda wait --for=condition=Available deployment --all --timeout=300s
}

# What the ScaledObject reads its metric from on kind: a small Prometheus that scrapes
# pods by their prometheus.io/* annotations (manifests/monitoring/kind-prometheus), at
# the serverAddress the kind-keda overlay names.
install_kind_prometheus() {
    log "prometheus for KEDA (manifests/monitoring/kind-prometheus)"
    k apply -k "$ROOT_DIR/manifests/monitoring/kind-prometheus"
    k -n monitoring wait --for=condition=Available deployment/prometheus --timeout=300s
}

install_kserve() {
    local mode=Standard
    if knative_mode; then
        mode=Knative
    fi
    log "kserve $KSERVE_VERSION (default deployment mode: $mode)"
    # The release's kserve.yaml holds no Namespace object (its release script drops
    # it since v0.17: hack/release/generate-install.sh): create it first, as
    # KServe's quick-install does.
    ensure_namespace kserve
    # CRDs first, Established, then the rest: kserve.yaml carries the
    # ClusterStorageContainer CRD *and* ClusterStorageContainer/default, and kubectl
    # resolves every object's kind before creating any, so in one apply the object
    # finds no kind. kserve-crds.yaml is config/crd/full (the release script,
    # hack/release/generate-install.sh); KServe's installer applies it and waits for
    # these CRDs before the controllers (v0.20.0 hack/setup/infra/
    # manage.kserve-kustomize.sh, wait_for_crds in hack/setup/common.sh).
    # Server-side apply: the CRDs are too large for the last-applied annotation.
    k apply --server-side --force-conflicts -f "$KSERVE_CRDS_URL"
    local crd crds=()
    for crd in inferenceservices trainedmodels clusterservingruntimes servingruntimes \
        inferencegraphs clusterstoragecontainers; do
        crds+=("crd/$crd.serving.kserve.io")
    done
    k wait --for=condition=Established --timeout=60s "${crds[@]}"
    k apply --server-side --force-conflicts -f "$KSERVE_URL"
    # The cluster resources hold ClusterServingRuntimes (checked by
    # kserve-controller-manager's webhook) and LLMInferenceServiceConfigs (checked
    # by llmisvc-controller-manager's, failurePolicy Fail: config/webhook/llmisvc/
    # manifests.yaml): wait for every controller, then retry for a bounded time
    # while cert-manager may still be issuing the webhooks' certificates.
    k -n kserve wait --for=condition=Available deployment --all --timeout=300s
    retry "$WEBHOOK_RETRIES" "$WEBHOOK_RETRY_DELAY" \
        k apply --server-side --force-conflicts -f "$KSERVE_RESOURCES_URL"
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
