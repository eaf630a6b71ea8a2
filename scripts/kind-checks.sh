#!/usr/bin/env bash
# What `scripts/kind-e2e.sh e2e` checks beyond the e2e suite (the web app's answer, the
# KEDA signal), and the diagnostics it dumps on failure. Sourced by kind-e2e.sh, whose
# settings (NAMESPACE, ISVC_NAME, WEB_NAME, LOCAL_*_PORT, ARTIFACTS_DIR, PYTHON ...) and
# helpers (k_query, forward, port_forward, retry, run, die) it uses. Not meant to run on
# its own.
# shellcheck disable=SC2154  # the settings are assigned by kind-e2e.sh

# The web app through its Service: /healthz, then one picture through /api/detect.
check_web() {
    local url="http://127.0.0.1:$LOCAL_WEB_PORT" pictures="$ARTIFACTS_DIR/web-picture"
    log "web app: $url/healthz, and $url/api/detect with one picture"
    forward "svc/$WEB_NAME" "$LOCAL_WEB_PORT:80"
    # demo/ is a tool beside the installed packages: run it from the repository's root.
    (cd "$ROOT_DIR" && run "$PYTHON" -m demo.synthetic --count 1 --seed 7 --out "$pictures")
    run curl -fsS --max-time 30 -o "$ARTIFACTS_DIR/web-healthz.json" "$url/healthz"
    run curl -fsS --max-time 120 -F "file=@$pictures/images/000000.png;type=image/png" \
        -o "$ARTIFACTS_DIR/web-detect.json" "$url/api/detect"
    run "$PYTHON" "$ROOT_DIR/scripts/check-web-answer.py" "$ARTIFACTS_DIR/web-detect.json" 1
}

# The ScaledObject's own query, asked of the Prometheus it names, must answer one
# series: KEDA reads an empty answer as 0 and would never scale out (kedacore/keda
# v2.18.0, pkg/scalers/prometheus_scaler.go). KServe names the ScaledObject after the
# predictor (v0.20.0, reconcilers/keda/keda_reconciler.go). Prometheus scrapes every
# 15 s: allow a minute for the first samples.
check_keda_signal() {
    local query url="http://127.0.0.1:$LOCAL_PROMETHEUS_PORT" answer="$ARTIFACTS_DIR/keda-signal.json"
    log "keda: the ScaledObject's query, asked of Prometheus at $url"
    if is_dry_run; then
        query=QUERY
    else
        query="$(k_query -n "$NAMESPACE" get "scaledobject/$ISVC_NAME-predictor" \
            -o jsonpath='{.spec.triggers[0].metadata.query}')"
    fi
    [[ -n "$query" ]] || die "ScaledObject $ISVC_NAME-predictor has no query: is KEDA installed (KEDA=1 up)?"
    port_forward "$LOCAL_PROMETHEUS_PORT" "$ARTIFACTS_DIR/port-forward.log" \
        kubectl --context "$KUBE_CONTEXT" -n monitoring port-forward --address 127.0.0.1 \
        svc/prometheus "$LOCAL_PROMETHEUS_PORT:9090"
    retry "$PROMETHEUS_RETRIES" "$PROMETHEUS_RETRY_DELAY" run_keda_query "$url" "$query" "$answer" \
        || die "Prometheus has no series for the ScaledObject's query $query (see $answer)"
}

run_keda_query() {
    run curl -fsS --max-time 10 -o "$3" --data-urlencode "query=$2" "$1/api/v1/query" \
        && run "$PYTHON" "$ROOT_DIR/scripts/check-prometheus-answer.py" "$3"
}

# --- diagnostics ---------------------------------------------------------------
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
            "-n $NAMESPACE get scaledobjects -o wide" \
            "-n $NAMESPACE describe replicasets -l $selector" \
            "-n $NAMESPACE get servingruntimes -o yaml" \
            "-n $NAMESPACE describe pods -l $selector" \
            "-n $NAMESPACE logs -l $selector --all-containers --prefix --tail=300" \
            "-n $NAMESPACE logs -l $selector --all-containers --prefix --tail=100 --previous" \
            "-n $NAMESPACE describe deployment $WEB_NAME" \
            "-n $NAMESPACE logs deployment/$WEB_NAME --tail=200" \
            "-n $NAMESPACE get events --sort-by=.lastTimestamp" \
            "-n kserve get pods -o wide" \
            "-n kserve logs deployment/kserve-controller-manager --tail=200"; do
            echo "---- kubectl $cmd"
            # Word splitting is intended: each entry is a kubectl argument list.
            # shellcheck disable=SC2086
            kubectl --context "$KUBE_CONTEXT" $cmd 2>&1 || true
        done
    } | tee "$file" >&2
}
