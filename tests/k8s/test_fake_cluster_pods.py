"""The stand-in cluster refuses pods that would never start (issue 29, item 9).

It used to report any InferenceService Ready once applied; a real cluster gets it Ready
only when its predictor pod runs. The fake now follows the pod through what a cluster
does to it (_fake_kserve.py, pod_problem), in the order a user meets the failures: the
ReplicaSet creating it (ServiceAccount), KServe's pod webhook (storage credentials), the
scheduler (GPUs), the kubelet (image pull) and the server itself (an empty model
folder). Each test shows one refusal and the fix that gets past it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._fakes import kubectl, on_node
from ._support import OVERLAYS_DIR, kustomize_command, only_isvc, render_dir

pytestmark = pytest.mark.k8s

Installed = Callable[[str], None]
IMAGE = "kserve-detector:0.1.0"


@pytest.fixture
def ml(tmp_path: Path, installed: Installed) -> Path:
    """A fake kind cluster after `up`, with namespace ml."""
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")
    installed("standard")
    assert kubectl(tmp_path, "create", "namespace", "ml").returncode == 0
    return tmp_path


def _apply(cluster: Path, overlay: str, change: Callable[[dict[str, Any]], None] | None = None
           ) -> None:
    import yaml

    objects = [copy.deepcopy(o) for o in render_dir(str(OVERLAYS_DIR / overlay))]
    if change is not None:
        change(only_isvc(objects))
    proc = kubectl(cluster, "apply", "-n", "ml", "-f", "-", stdin=yaml.safe_dump_all(objects))
    assert proc.returncode == 0, proc.stderr


def _wait(cluster: Path) -> tuple[int, str]:
    proc = kubectl(cluster, "-n", "ml", "wait", "--for=condition=Ready", "isvc/detector")
    return proc.returncode, proc.stderr


def test_a_server_that_exits_on_an_empty_model_folder_never_gets_ready(ml: Path) -> None:
    # What OVERLAY=grpc used to deploy on kind: overlays/grpc names no weights.
    on_node(ml, IMAGE)
    _apply(ml, "grpc")
    rc, err = _wait(ml)
    assert rc == 1
    assert "CrashLoopBackOff: kserve-container exited with code 2" in err
    _apply(ml, "kind-grpc")
    assert _wait(ml) == (0, "")


def test_an_image_never_loaded_into_kind_is_not_pulled(ml: Path) -> None:
    _apply(ml, "kind")
    rc, err = _wait(ml)
    assert rc == 1
    assert f'ErrImageNeverPull: container image "{IMAGE}"' in err
    on_node(ml, IMAGE)
    assert _wait(ml)[0] == 0


def test_an_image_no_registry_has_is_never_pulled(ml: Path) -> None:
    def pull(isvc: dict[str, Any]) -> None:
        isvc["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"

    _apply(ml, "kind", pull)
    rc, err = _wait(ml)
    assert rc == 1
    assert f'ImagePullBackOff: failed to pull image "{IMAGE}"' in err


def test_a_missing_service_account_keeps_the_pod_from_being_created(ml: Path) -> None:
    # What overlays/model did: name an account nothing renders.
    def account(isvc: dict[str, Any]) -> None:
        isvc["spec"]["predictor"]["serviceAccountName"] = "detector-models"

    on_node(ml, IMAGE)
    _apply(ml, "kind", account)
    rc, err = _wait(ml)
    assert rc == 1
    assert 'serviceaccount "detector-models" not found' in err


def test_storage_credentials_must_exist_before_the_pod(ml: Path) -> None:
    # overlays/storage-uri renders its ServiceAccount; the Secret it lists is the user's.
    on_node(ml, IMAGE)
    _apply(ml, "storage-uri")
    rc, err = _wait(ml)
    assert rc == 1
    assert 'denied the request: secrets "detector-models-storage" not found' in err
    secret = "manifests/components/storage-credentials/secret.example.yaml"
    assert kubectl(ml, "apply", "-n", "ml", "-f", secret).returncode == 0
    assert _wait(ml) == (0, "")


def test_a_gpu_pod_stays_pending_on_a_node_without_gpus(ml: Path) -> None:
    on_node(ml, "kserve-detector:0.1.0-gpu")
    _apply(ml, "gpu")
    rc, err = _wait(ml)
    assert rc == 1
    assert "Insufficient nvidia.com/gpu" in err


def test_a_model_format_no_runtime_serves_is_refused(ml: Path) -> None:
    # overlays/model without the runtime installed (kubectl apply -k manifests/runtime).
    on_node(ml, IMAGE)
    secret = "manifests/components/storage-credentials/secret.example.yaml"
    assert kubectl(ml, "apply", "-n", "ml", "-f", secret).returncode == 0
    _apply(ml, "model")
    rc, err = _wait(ml)
    assert rc == 1
    assert "No runtime found to support specified predictor" in err



def test_the_web_app_rolls_out_only_with_its_image_on_the_node(ml: Path) -> None:
    web = "kserve-detector-web:0.1.0"
    assert kubectl(ml, "apply", "-k", "manifests/app", "-n", "ml").returncode == 0
    proc = kubectl(ml, "-n", "ml", "rollout", "status", "deployment/detector-web")
    assert proc.returncode == 1
    assert f'ImagePullBackOff: failed to pull image "{web}"' in proc.stderr
    on_node(ml, web)
    assert kubectl(ml, "-n", "ml", "rollout", "status",
                   "deployment/detector-web").returncode == 0
