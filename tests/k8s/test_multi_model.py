"""The multi-model example (manifests/overlays/multi-model): an InferenceService with a
model repository and no storageUri, and TrainedModels that KServe's agent loads into it.

Rendered with kustomize and checked against the kserve/kubernetes API models and KServe's
CRDs (the TrainedModel CRD is v0.20.0's, from ``KSERVE_CRDS_DIR`` or the shared
``kserve-crds`` folder beside the checkout).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import (
    MANIFESTS,
    REPO_ROOT,
    crd_validator,
    of_kind,
    only_isvc,
    strict_schema,
)

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
Errors = Callable[[dict[str, Any]], list[str]]

EXAMPLE = MANIFESTS / "overlays" / "multi-model"
TRAINED_MODEL_CRD = "serving.kserve.io_trainedmodels.yaml"
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6,
          "G": 10**9, "T": 10**12, "": 1}


def _bytes(quantity: str | int) -> int:
    found = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", str(quantity))
    assert found is not None, f"not a memory quantity: {quantity}"
    return int(float(found[1]) * _UNITS[found[2] or ""])


def _container(isvc: dict[str, Any]) -> dict[str, Any]:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return container  # type: ignore[no-any-return]


def _flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in container["args"])


@pytest.fixture
def isvc(render: Render) -> dict[str, Any]:
    return only_isvc(render(EXAMPLE / "inferenceservice"))


@pytest.fixture
def trained_models(render: Render) -> list[dict[str, Any]]:
    objects = render(EXAMPLE / "trainedmodels")
    assert objects == of_kind(objects, "TrainedModel")
    return objects


def _trained_model_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates the CRD")
    yaml = pytest.importorskip("yaml", reason="pyyaml reads the CRD")
    folders = [Path(os.environ["KSERVE_CRDS_DIR"])] if os.environ.get("KSERVE_CRDS_DIR") else []
    folders.append(REPO_ROOT.parent / "shared" / "kserve-crds")
    found = next((f / TRAINED_MODEL_CRD for f in folders if (f / TRAINED_MODEL_CRD).is_file()),
                 None)
    if found is None:
        pytest.skip(f"no {TRAINED_MODEL_CRD}: set KSERVE_CRDS_DIR to a folder holding KServe's "
                    f"CRDs (the TrainedModel one from the v0.20.0 tag)")
    crd = yaml.safe_load(found.read_text(encoding="utf-8"))
    served = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = strict_schema(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft7Validator(schema)


def test_the_inference_service_serves_a_repository(isvc: dict[str, Any],
                                                   api_errors: Errors) -> None:
    assert api_errors(isvc) == []
    predictor = isvc["spec"]["predictor"]
    assert "model" not in predictor, "a storageUri or model format would pre-load one model"
    container = _container(isvc)
    assert "storageUri" not in container
    flags = _flags(container)
    assert flags["model_repository"] == "/mnt/models"  # where KServe's agent puts them
    assert "model_dir" not in flags
    assert "model_name" not in flags
    assert int(flags["max_models"]) >= 1
    # The server parses them: no flag the server does not know.
    from predictor.__main__ import build_parser
    from predictor.config import from_args

    cfg = from_args(build_parser().parse_args(container["args"]))
    assert (cfg.model_repository, cfg.max_models) == ("/mnt/models", int(flags["max_models"]))
    # Ready is the server's readiness: there is no one model to ask for.
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_the_inference_service_matches_kserves_crd(isvc: dict[str, Any]) -> None:
    validator = crd_validator("InferenceService")
    assert [e.message for e in validator.iter_errors(isvc)] == []


def test_the_trained_models_match_kserves_crd_and_fit(trained_models: list[dict[str, Any]],
                                                      isvc: dict[str, Any]) -> None:
    from predictor.server.repository import check_name

    validator = _trained_model_validator()
    container = _container(isvc)
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert len(trained_models) >= 2
    assert len(trained_models) <= int(_flags(container)["max_models"])
    total = 0
    for model in trained_models:
        assert model["apiVersion"] == "serving.kserve.io/v1alpha1"
        assert [e.message for e in validator.iter_errors(model)] == [], model["metadata"]["name"]
        check_name(model["metadata"]["name"])  # the folder and the model name requests use
        spec = model["spec"]
        assert spec["inferenceService"] == isvc["metadata"]["name"]
        assert spec["model"]["storageUri"]
        total += _bytes(spec["model"]["memory"])
    # KServe places a TrainedModel only while the models' memory fits the predictor's limit.
    assert total <= limit


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda m: m["spec"]["model"].pop("memory"), "'memory' is a required property"),
    (lambda m: m["spec"]["model"].__setitem__("memmory", "1Gi"), "memmory"),
    (lambda m: m["spec"]["model"].__setitem__("memory", "a lot"), "does not match"),
    (lambda m: m["spec"].pop("inferenceService"), "'inferenceService' is a required"),
])
def test_the_crd_check_refuses_a_broken_trained_model(
        trained_models: list[dict[str, Any]], mutate: Callable[[dict[str, Any]], Any],
        words: str) -> None:
    validator = _trained_model_validator()
    broken = copy.deepcopy(trained_models[0])
    mutate(broken)
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert words in messages
