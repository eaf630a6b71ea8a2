#!/usr/bin/env bash
# Run inside the Dockerfile's two builder stages (web-builder, builder), so the
# virtualenv and the project's install are written once.
#
#   image-venv.sh deps REQUIREMENTS [TORCH_INDEX_URL]
#       /opt/venv with those requirements (torch and torchvision first from the index,
#       when one is given), pip removed afterwards, and /opt/app on the venv's path
#       through a .pth file.
#   image-venv.sh app SOURCE [PACKAGE ...]
#       the project from SOURCE into /opt/app without dependencies, then the PACKAGEs
#       named removed from it (the web image drops the predictor).
#
# pip trusts /tmp/build/ca.crt when scripts/image.sh put the host's CA bundle there, and
# installs the versions /tmp/build/constraints.txt pins (PIP_CONSTRAINT, set by the
# Dockerfile's build-base stage).
set -euo pipefail

if [[ -f /tmp/build/ca.crt ]]; then
    export PIP_CERT=/tmp/build/ca.crt
fi
cmd="${1:?usage: image-venv.sh deps REQUIREMENTS [INDEX] | app SOURCE [PACKAGE ...]}"
shift

case "$cmd" in
    deps)
        requirements="$1"
        index="${2:-}"
        python -m venv /opt/venv
        if [[ -n "$index" ]]; then
            mapfile -t torch_reqs < <(grep -E '^(torch|torchvision)[=<>~ ]' "$requirements")
            /opt/venv/bin/pip install --index-url "$index" "${torch_reqs[@]}"
        fi
        /opt/venv/bin/pip install -r "$requirements"
        /opt/venv/bin/pip uninstall -y -q pip
        site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        echo /opt/app > "$site/kserve_detector_app.pth"
        ;;
    app)
        source="$1"
        shift
        python -m venv /tmp/tools
        /tmp/tools/bin/pip install -q --no-deps --target /opt/app "$source"
        rm -rf /opt/app/bin
        for package in "$@"; do
            rm -rf "/opt/app/${package:?}"
        done
        ;;
    *)
        echo "image-venv.sh: unknown command '$cmd' (deps or app)" >&2
        exit 2
        ;;
esac
