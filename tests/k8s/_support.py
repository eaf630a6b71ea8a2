"""Helpers for the manifest tests: rendering kustomizations, and KServe's CRD schemas.

Nothing here needs a cluster. Rendering needs ``kubectl`` (with its built-in
kustomize) or ``kustomize``. The objects are validated against the API models of the
installed ``kserve`` and ``kubernetes`` packages (``_models.py``); KServe's CRD files
are an extra check, run only when ``KSERVE_CRDS_DIR`` names a folder holding them
(e.g. ``config/crd/full`` of a KServe checkout). Each helper skips the calling test,
with the reason, when its tool or file is missing.
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
# Overlays that render a serving runtime and no InferenceService.
RUNTIME_ONLY_OVERLAYS = {"runtime-namespaced"}
ISVC_OVERLAYS = [o for o in OVERLAYS if o not in RUNTIME_ONLY_OVERLAYS]
SCRIPTS_DIR = REPO_ROOT / "scripts"

# kind -> (CRD file, served version) for the optional CRD-schema check.
CRD_FILES = {
    "InferenceService": ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    "ServingRuntime": ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    "ClusterServingRuntime": ("serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1"),
}


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


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [o for o in objects if o.get("kind") == kind]


def only_isvc(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The single InferenceService among rendered objects."""
    isvcs = of_kind(objects, "InferenceService")
    assert len(isvcs) == 1, f"expected one InferenceService, got {len(isvcs)}"
    return isvcs[0]


def crds_dir() -> Path | None:
    """The folder KSERVE_CRDS_DIR names, when it holds the InferenceService CRD."""
    value = os.environ.get("KSERVE_CRDS_DIR")
    if not value:
        return None
    folder = Path(value)
    return folder if (folder / CRD_FILES["InferenceService"][0]).is_file() else None


@cache
def load_crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of KServe's CRD for ``kind`` (cached; do not mutate)."""
    folder = crds_dir()
    if folder is None:
        pytest.skip("extra check: set KSERVE_CRDS_DIR to a folder with KServe's CRDs "
                    "(config/crd/full in a KServe checkout) to validate against them too")
    file_name, version = CRD_FILES[kind]
    yaml = _yaml()
    # The InferenceService CRD is ~40k lines: libyaml's loader is several times faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((folder / file_name).read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def strict_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A copy of an openAPIV3Schema node that rejects unknown fields, as the API server does.

    Objects with declared properties get ``additionalProperties: false`` unless they
    carry ``x-kubernetes-preserve-unknown-fields``; objects that declare nothing (the
    embedded ``metadata``) stay open. ``x-kubernetes-int-or-string`` becomes
    integer-or-string.
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


def crd_validator(kind: str) -> Any:
    """A jsonschema validator for one KServe kind from its CRD, unknown fields rejected."""
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is needed for CRD validation (pip install jsonschema)")
    schema = strict_schema(load_crd_schema(kind))
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})

    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    checker = jsonschema.FormatChecker()
    checker.checks("int32")(_int32)
    checker.checks("int64")(_int64)
    return jsonschema.Draft7Validator(schema, format_checker=checker)
