"""Every ServiceAccount an overlay's predictor runs as exists once the overlay is applied
(issue 29, item 7).

overlays/model named ServiceAccount ``detector-models`` and nothing rendered it: on a
cluster the ReplicaSet cannot create the pod ('serviceaccount "detector-models" not
found') and the InferenceService never gets Ready. Each overlay now renders the
accounts it names. The Secrets those accounts list hold credentials, so they are the
user's to create: each has an example manifest (applied by no kustomization) and is
named in docs/kubernetes.md. KServe's pod webhook refuses the pod while one is missing
(v0.20.0, pkg/credentials/service_account_credentials.go, mountSecretCredential).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS_DIR, REPO_ROOT, of_kind

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]


def _examples() -> dict[str, Path]:
    """Secret name -> the example manifest that shows it (applied by nothing)."""
    import yaml

    out = {}
    for path in MANIFESTS.rglob("*.example.yaml"):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if doc.get("kind") == "Secret":
            out[doc["metadata"]["name"]] = path
    return out


@pytest.mark.parametrize("overlay", ISVC_OVERLAYS)
def test_every_service_account_an_overlay_runs_as_is_rendered_by_it(
        overlay: str, render: Render) -> None:
    objects = render(OVERLAYS_DIR / overlay)
    (isvc,) = of_kind(objects, "InferenceService")
    wanted = isvc["spec"]["predictor"].get("serviceAccountName")
    if wanted is None:
        return  # the namespace's "default" account, which Kubernetes always makes
    rendered = {sa["metadata"]["name"] for sa in of_kind(objects, "ServiceAccount")}
    assert wanted in rendered, (
        f"overlays/{overlay} runs the predictor as ServiceAccount {wanted!r} and renders "
        f"only {sorted(rendered)}: the ReplicaSet could not create the pod")


@pytest.mark.parametrize("overlay", ISVC_OVERLAYS)
def test_secrets_the_accounts_list_are_documented_for_the_user_to_create(
        overlay: str, render: Render) -> None:
    examples = _examples()
    guide = (REPO_ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    objects = render(OVERLAYS_DIR / overlay)
    rendered_secrets = {s["metadata"]["name"] for s in of_kind(objects, "Secret")}
    for sa in of_kind(objects, "ServiceAccount"):
        for ref in sa.get("secrets", []):
            name = ref["name"]
            assert name in examples, f"{overlay}: no example manifest shows Secret {name}"
            # A re-apply must never overwrite the user's credentials with the example's.
            assert name not in rendered_secrets
            assert f"`{name}`" in guide, f"docs/kubernetes.md does not name Secret {name}"


def test_the_example_secret_carries_the_keys_kserve_reads() -> None:
    import yaml

    example = _examples()["detector-models-storage"]
    secret = yaml.safe_load(example.read_text(encoding="utf-8"))
    # KServe v0.20.0 config/configmap/inferenceservice.yaml, credentials.s3.
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"]
