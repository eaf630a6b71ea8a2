"""docs/kubernetes.md's "Your own registry" recipe, rendered over every overlay (issue 29,
item 4): the recipe must move each overlay's image to the registry and keep the build
the overlay runs, the GPU build wherever the server is told ``--device=cuda``.

kustomize's `images:` matches an image by name whatever its tag, so a recipe that also
sets ``newTag`` rewrites the GPU overlays' ``0.1.0-gpu`` to the CPU build.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._fakes import repo
from ._kserve import predictor_container
from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS, OVERLAYS_DIR, REPO_ROOT, of_kind

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
GUIDE = REPO_ROOT / "docs" / "kubernetes.md"


def _recipe() -> dict[str, Any]:
    """The kustomization the guide's "Your own registry" paragraph shows."""
    import yaml

    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("**Your own registry.**")
    (block,) = re.findall(r"```yaml\n(.*?)```", text[start:text.index("\n## ", start)],
                          re.DOTALL)
    recipe: dict[str, Any] = yaml.safe_load(block)
    return recipe


def _images(objects: list[dict[str, Any]], cluster: list[dict[str, Any]]) -> list[str]:
    """Every image the rendered objects would run: runtimes' and the predictor's."""
    out = [c["image"] for rt in of_kind(objects, "ServingRuntime")
           for c in rt["spec"]["containers"]]
    for isvc in of_kind(objects, "InferenceService"):
        c = predictor_container(isvc, of_kind(objects, "ServingRuntime") + cluster)
        out.append(c["image"])
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_registry_recipe_keeps_each_overlays_build(overlay: str, tmp_path: Path,
                                                   render: Render) -> None:
    recipe = _recipe()
    (image,) = recipe["images"]
    assert set(image) == {"name", "newName"}, (
        "a tag or digest in a recipe shared by the CPU and GPU overlays replaces the GPU build")
    import yaml

    def over(target: str, name: str) -> Path:
        folder = repo(tmp_path) / "out" / name
        folder.mkdir(parents=True)
        ours = {**recipe, "resources": [f"../../manifests/{target}"]}
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(ours))
        return folder

    folder = over(f"overlays/{overlay}", "registry")
    # The cluster runtime comes from its own kustomization; the recipe goes over it too.
    moved_cluster = of_kind(render(over("runtime", "registry-runtime")), "ClusterServingRuntime")
    cluster = of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")
    moved = _images(render(folder), moved_cluster)
    original = _images(render(OVERLAYS_DIR / overlay), cluster)
    assert moved, f"{overlay} renders no image"
    for before, after in zip(original, moved, strict=True):
        name, _, tag = before.rpartition(":")
        assert name == "kserve-detector"
        assert after == f"{image['newName']}:{tag}", f"{overlay}: {before} became {after}"
    if overlay in ISVC_OVERLAYS:
        (isvc,) = of_kind(render(folder), "InferenceService")
        runtimes = of_kind(render(folder), "ServingRuntime") + moved_cluster
        c = predictor_container(isvc, runtimes)
        if "--device=cuda" in c.get("args", []):
            assert c["image"].endswith("-gpu"), f"{overlay} runs {c['image']} with --device=cuda"
