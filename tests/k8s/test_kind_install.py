"""What `scripts/kind-e2e.sh up` installs, and when (issue 29, items 3 and 5).

Run against the fake kubectl (_fake_kubectl.py) and its cluster, which refuses what a
real one refuses: here, cert-manager's webhook answering before its CA bundle is
injected.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._fakes import (
    SUCCEEDING_TOOLS,
    calls,
    cluster_object,
    first_line_with,
    kubectl,
    run_script,
)

pytestmark = pytest.mark.k8s

# KEDA 2.18.0 has CVE-2025-68476, fixed in 2.18.3 (kedacore/keda v2.18.3 CHANGELOG.md);
# KServe v0.20.0's kserve-deps.env still pins 2.18.0 and flags the CVE beside it.
FIXED_KEDA = (2, 18, 3)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def test_keda_up_installs_a_release_without_cve_2025_68476(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "up", KEDA="1")
    assert proc.returncode == 0, proc.stderr
    (url,) = re.findall(r"https://github\.com/kedacore/keda/releases/download/\S+", proc.stdout)
    tag, file_name = url.rsplit("/", 2)[-2:]
    assert tag == f"v{file_name.removeprefix('keda-').removesuffix('.yaml')}"
    installed = _version(tag.removeprefix("v"))
    assert installed[:2] == FIXED_KEDA[:2], "the 2.18 line is what KServe v0.20.0 is tested with"
    assert installed >= FIXED_KEDA, f"KEDA {tag} has CVE-2025-68476 (fixed in 2.18.3)"


def test_docs_name_the_keda_release_the_script_installs() -> None:
    from ._support import REPO_ROOT

    script = (REPO_ROOT / "scripts" / "kind-e2e.sh").read_text(encoding="utf-8")
    (pinned,) = re.findall(r'KEDA_VERSION="\$\{KEDA_VERSION:-([0-9.]+)\}"', script)
    guide = (REPO_ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    named = set(re.findall(r"installs KEDA ([0-9.]+)", guide))
    assert named == {pinned}


# --- item 3: cert-manager's API before kserve.yaml --------------------------------------

CERT_MANAGER = ("https://github.com/cert-manager/cert-manager/releases/download/v1.17.0/"
                "cert-manager.yaml")
ISSUER = """apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: probe, namespace: cert-manager}
spec: {selfSigned: {}}
"""


def test_fake_refuses_cert_manager_objects_until_the_ca_bundle_is_injected(
        tmp_path: Path) -> None:
    assert kubectl(tmp_path, "apply", "-f", CERT_MANAGER).returncode == 0
    assert kubectl(tmp_path, "-n", "cert-manager", "wait", "--for=condition=Available",
                   "deployment", "--all").returncode == 0
    early = kubectl(tmp_path, "create", "--dry-run=server", "-f", "-", stdin=ISSUER,
                    FAKE_CA_INJECT_SECONDS="60")
    assert early.returncode == 1
    assert "x509: certificate signed by unknown authority" in early.stderr
    later = kubectl(tmp_path, "create", "--dry-run=server", "-o", "name", "-f", "-",
                    stdin=ISSUER)
    assert later.returncode == 0, later.stderr
    assert cluster_object(tmp_path, "Issuer", "cert-manager", "probe") is None, "a dry run"


def test_up_waits_for_cert_managers_api_before_kserves_certificates(tmp_path: Path) -> None:
    # The CA bundle lands 3 s after cert-manager's Deployments are Available: applied at
    # once, kserve.yaml's Issuer and Certificates are refused ("x509: certificate signed
    # by unknown authority") and `up` stops.
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other",
                      FAKE_CA_INJECT_SECONDS="3", CERT_MANAGER_API_RETRIES="20",
                      CERT_MANAGER_API_RETRY_DELAY="0.5")
    assert proc.returncode == 0, proc.stderr
    # The webhook did refuse at first: the wait is what got past it.
    assert "x509: certificate signed by unknown authority" in proc.stderr
    ran = calls(tmp_path)
    available = first_line_with(ran, "-n cert-manager wait --for=condition=Available")
    probe = max(i for i, c in enumerate(ran) if "create --dry-run=server" in c)
    assert available < probe < first_line_with(ran, "v0.20.0/kserve.yaml")
    assert cluster_object(tmp_path, "Issuer", "kserve", "selfsigned-issuer")
    assert cluster_object(tmp_path, "Certificate", "kserve", "serving-cert")


def test_up_gives_up_on_a_cert_manager_api_that_never_answers(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other",
                      FAKE_CA_INJECT_SECONDS="600", CERT_MANAGER_API_RETRIES="2",
                      CERT_MANAGER_API_RETRY_DELAY="0")
    assert proc.returncode != 0
    assert "cert-manager's API did not answer after 2 tries" in proc.stderr
    assert not any("kserve.yaml" in c for c in calls(tmp_path))
