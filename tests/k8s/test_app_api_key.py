"""manifests/app/api-key: the Component that gives the web app's DeepStack routes an API
key from a Secret, rendered in an overlay of a user's own as its comment says."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._support import MANIFESTS

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
COMPONENT = MANIFESTS / "app" / "api-key"


@pytest.fixture(scope="module")
def with_key(render: Render, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, dict[str, Any]]:
    """``my-app`` next to a copy of manifests/, as the Component's comment writes it."""
    root = tmp_path_factory.mktemp("overlay")
    shutil.copytree(MANIFESTS, root / "manifests")
    (root / "my-app").mkdir()
    (root / "my-app" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../manifests/app]\ncomponents: [../manifests/app/api-key]\n")
    return {o["kind"]: o for o in render(root / "my-app")}


def test_the_key_file_comes_from_the_secret_read_only(with_key: dict[str, Any]) -> None:
    pod = with_key["Deployment"]["spec"]["template"]["spec"]
    (web,) = pod["containers"]
    env = {e["name"]: e for e in web["env"]}
    path = env["DETECT_WEB_API_KEY_FILE"]["value"]
    (mount,) = [m for m in web["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert "optional" not in secret  # no Secret, no pod: never serve without the key
    (item,) = secret["items"]
    assert path == f"{mount['mountPath']}/{item['path']}"
    # Readable by the app's group (fsGroup 1000), by nobody else.
    assert secret["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == web["securityContext"]["runAsGroup"]

    example = yaml.safe_load((COMPONENT / "secret.example.yaml").read_text(encoding="utf-8"))
    assert (example["kind"], example["metadata"]["name"]) == ("Secret", secret["secretName"])
    assert item["key"] in example["stringData"]


def test_the_key_never_shows_in_the_pod_spec(with_key: dict[str, Any]) -> None:
    (web,) = with_key["Deployment"]["spec"]["template"]["spec"]["containers"]
    words = [*web.get("args", []), *web.get("command", []),
             *(str(e.get("value", "")) for e in web["env"])]
    assert not any("replace-with" in w or w.startswith("--api-key") for w in words)
    assert all("secretKeyRef" not in e.get("valueFrom", {}) for e in web["env"])


def test_the_rest_of_the_app_is_unchanged(with_key: dict[str, Any], render: Render) -> None:
    plain = {o["kind"]: o for o in render(MANIFESTS / "app")}
    assert with_key["Service"] == plain["Service"]
    assert set(with_key) == set(plain)
