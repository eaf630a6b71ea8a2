#!/usr/bin/env bash
# The dependency audit (`make audit`, and the last step of `make lint`): known
# vulnerabilities in the installed packages, from PyPI's advisory data (pip-audit).
#
# Exits non-zero on a finding, so `make lint` fails on it. When the advisory service
# cannot be reached, nothing can be checked: it says so in one clear line and exits 0,
# so that an offline machine's lint still checks the code (AUDIT_OFFLINE_OK=0 makes that
# a failure too, for a CI that must audit).
#
# Environment:
#   BIN                the virtualenv's bin folder (default .venv/bin)
#   AUDIT_SERVICE_URL  what is probed first (default https://pypi.org/pypi/pip/json)
#   AUDIT_OFFLINE_OK   1 (default): an unreachable service is a warning; 0: a failure
set -euo pipefail

BIN="${BIN:-.venv/bin}"
URL="${AUDIT_SERVICE_URL:-https://pypi.org/pypi/pip/json}"
OFFLINE_OK="${AUDIT_OFFLINE_OK:-1}"

if ! "$BIN/python" - "$URL" >/dev/null 2>&1 <<'PY'
import sys
import urllib.request

urllib.request.urlopen(sys.argv[1], timeout=10)
PY
then
    echo "audit: NOT RUN: the advisory service ($URL) is unreachable from here," \
        "so no dependency was checked for known vulnerabilities" >&2
    if [[ "$OFFLINE_OK" == 1 ]]; then
        exit 0
    fi
    exit 1
fi
exec "$BIN/pip-audit" --progress-spinner off --skip-editable
