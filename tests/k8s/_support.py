"""Helpers for the manifest tests: rendering overlays and KServe's CRD schema.

Nothing here needs a cluster. Rendering needs ``kubectl`` (with its built-in
kustomize) or ``kustomize``; schema checks need the InferenceService CRD, found
through ``KSERVE_CRDS_DIR``, ``SHARED_DIR/kserve-crds`` or
``<repo>/../shared/kserve-crds``. Each helper skips the calling test, with the
reason, when its tool or file is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS_DIR = MANIFESTS / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
SCRIPTS_DIR = REPO_ROOT / "scripts"
CRD_FILE = "serving.kserve.io_inferenceservices.yaml"


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="pyyaml is needed to read manifests")


def kustomize_command() -> list[str] | None:
    """The command that renders a kustomization directory, or None when none is installed."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@cache
def render_dir(directory: str) -> tuple[dict[str, Any], ...]:
    """The objects a kustomization directory renders to (cached; do not mutate)."""
    yaml = _yaml()
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is on PATH: cannot render manifests")
    proc = subprocess.run([*command, directory], capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} {directory} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def only_isvc(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The single InferenceService among rendered objects."""
    isvcs = [o for o in objects if o.get("kind") == "InferenceService"]
    assert len(isvcs) == 1, f"expected one InferenceService, got {len(isvcs)}"
    return isvcs[0]


def find_crds_dir() -> Path | None:
    """Where KServe's CRDs are, or None."""
    candidates = []
    if os.environ.get("KSERVE_CRDS_DIR"):
        candidates.append(Path(os.environ["KSERVE_CRDS_DIR"]))
    if os.environ.get("SHARED_DIR"):
        candidates.append(Path(os.environ["SHARED_DIR"]) / "kserve-crds")
    candidates.append(REPO_ROOT / ".." / "shared" / "kserve-crds")
    return next((c for c in candidates if (c / CRD_FILE).is_file()), None)


@cache
def load_isvc_schema() -> dict[str, Any]:
    """The v1beta1 openAPIV3Schema of KServe's InferenceService CRD (cached; do not mutate)."""
    crds_dir = find_crds_dir()
    if crds_dir is None:
        pytest.skip(f"KServe CRDs not found ({CRD_FILE}): set KSERVE_CRDS_DIR or SHARED_DIR")
    yaml = _yaml()
    # The CRD is ~40k lines: libyaml's loader reads it several times faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((crds_dir / CRD_FILE).read_text(), Loader=loader)  # noqa: S506
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


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
OBJECT_META_SCHEMA: dict[str, Any] = {
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


def isvc_validator() -> Any:
    """A jsonschema validator for InferenceService v1beta1 that rejects unknown fields."""
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is needed for CRD validation (pip install jsonschema)")
    schema = strict_schema(load_isvc_schema())
    schema["properties"]["metadata"] = OBJECT_META_SCHEMA
    schema["properties"]["apiVersion"] = {"const": "serving.kserve.io/v1beta1"}
    schema["properties"]["kind"] = {"const": "InferenceService"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})

    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    checker = jsonschema.FormatChecker()
    checker.checks("int32")(_int32)
    checker.checks("int64")(_int64)

    cls = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                       {"x-kubernetes-list-map-keys": _list_map_keys})
    return cls(schema, format_checker=checker)
