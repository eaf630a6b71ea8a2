"""Fixtures for the manifest tests: rendered overlays and KServe's CRD schema.

Nothing here needs a cluster. Rendering needs ``kubectl`` (with its built-in
kustomize) or ``kustomize``; schema checks need the InferenceService CRD, found
through ``KSERVE_CRDS_DIR``, ``SHARED_DIR/kserve-crds`` or ``<repo>/../shared/kserve-crds``.
Each skips with the reason when its tool or file is missing.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is needed to read manifests (pip install pyyaml)")

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS_DIR = MANIFESTS / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
CRD_FILE = "serving.kserve.io_inferenceservices.yaml"


def kustomize_command() -> list[str] | None:
    """The command that renders a kustomization directory, or None when none is installed."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@cache
def _render(directory: str) -> tuple[dict[str, Any], ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is on PATH: cannot render manifests")
    proc = subprocess.run([*command, directory], capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} {directory} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


@pytest.fixture(scope="session")
def render() -> Callable[[str | Path], list[dict[str, Any]]]:
    """Renders a kustomization directory (cached per directory) into its objects."""
    def _do(directory: str | Path) -> list[dict[str, Any]]:
        return copy.deepcopy(list(_render(str(directory))))
    return _do


def only_isvc(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The single InferenceService among rendered objects."""
    isvcs = [o for o in objects if o.get("kind") == "InferenceService"]
    assert len(isvcs) == 1, f"expected one InferenceService, got {len(isvcs)}"
    return isvcs[0]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Name of each directory under manifests/overlays."""
    return str(request.param)


@pytest.fixture
def isvc(overlay: str, render: Callable[[str | Path], list[dict[str, Any]]]) -> dict[str, Any]:
    """The InferenceService an overlay renders."""
    return only_isvc(render(OVERLAYS_DIR / overlay))


@pytest.fixture
def base_isvc(render: Callable[[str | Path], list[dict[str, Any]]]) -> dict[str, Any]:
    """The base InferenceService, rendered (a fresh copy each test may change)."""
    return only_isvc(render(MANIFESTS / "base"))


# --- KServe CRD schema ------------------------------------------------------------------

def find_crds_dir() -> Path | None:
    """Where KServe's CRDs are, or None."""
    candidates = []
    if os.environ.get("KSERVE_CRDS_DIR"):
        candidates.append(Path(os.environ["KSERVE_CRDS_DIR"]))
    if os.environ.get("SHARED_DIR"):
        candidates.append(Path(os.environ["SHARED_DIR"]) / "kserve-crds")
    candidates.append(REPO_ROOT / ".." / "shared" / "kserve-crds")
    return next((c for c in candidates if (c / CRD_FILE).is_file()), None)


def strict_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A copy of an openAPIV3Schema node that rejects unknown fields, as the API server does.

    The API server prunes (and, with kubectl's default strict field validation,
    rejects) fields that a structural schema does not declare. JSON Schema allows
    them unless told otherwise, so objects with declared properties get
    ``additionalProperties: false`` unless they carry
    ``x-kubernetes-preserve-unknown-fields``. Objects that declare nothing at all
    are the embedded ``metadata`` fields, which the API server checks on its own;
    they stay open. ``x-kubernetes-int-or-string`` becomes integer-or-string.
    """
    out = dict(node)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if "properties" in out:
        out["properties"] = {k: strict_schema(v) for k, v in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict_schema(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict_schema(s) for s in out[key]]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


# What the API server checks in any object's metadata before the CRD schema applies.
_OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 63,
                 "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]) -> Any:
    """Items of an x-kubernetes-list-type=map list must be unique by their keys."""
    if not isinstance(instance, list) or schema.get("x-kubernetes-list-type") != "map":
        return
    from jsonschema import ValidationError
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        # "protocol" defaults to TCP for ports; compare with the default filled in.
        ident = tuple(item.get(k, "TCP" if k == "protocol" else None) for k in keys)
        if ident in seen:
            yield ValidationError(f"duplicate entry for keys {keys}: {ident}")
        seen.add(ident)


@cache
def _load_isvc_schema() -> dict[str, Any]:
    crds_dir = find_crds_dir()
    if crds_dir is None:
        pytest.skip(f"KServe CRDs not found ({CRD_FILE}): set KSERVE_CRDS_DIR or SHARED_DIR")
    # The CRD is ~40k lines: libyaml's loader reads it several times faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((crds_dir / CRD_FILE).read_text(), Loader=loader)  # noqa: S506
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="session")
def isvc_validator() -> Any:
    """A jsonschema validator for InferenceService v1beta1 that rejects unknown fields."""
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is needed for CRD validation (pip install jsonschema)")
    schema = strict_schema(_load_isvc_schema())
    schema["properties"]["metadata"] = _OBJECT_META
    schema["properties"]["apiVersion"] = {"const": "serving.kserve.io/v1beta1"}
    schema["properties"]["kind"] = {"const": "InferenceService"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})

    checker = jsonschema.FormatChecker()

    @checker.checks("int32")
    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("int64")
    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    cls = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                       {"x-kubernetes-list-map-keys": _list_map_keys})
    return cls(schema, format_checker=checker)


@pytest.fixture(scope="session")
def schema_errors(isvc_validator: Any) -> Callable[[dict[str, Any]], list[str]]:
    """Lists an object's schema violations as ``path: message``; empty when valid."""
    def _errors(obj: dict[str, Any]) -> list[str]:
        errors = sorted(isvc_validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        return ["/".join(str(p) for p in e.absolute_path) + ": " + e.message for e in errors]
    return _errors


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    """The CRD's own v1beta1 openAPIV3Schema (not made strict), for reading enums."""
    return copy.deepcopy(_load_isvc_schema())
