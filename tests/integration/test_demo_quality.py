"""The shipped demo detector really detects, judged through the real server.

50 held-out pictures (a seed the detector never trained on, half of them not square)
go through V1 and V2 REST; COCO-style mAP@0.5 must reach 0.9 on both. The same check
on the random-weights server must fail, so this test cannot pass on plumbing alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client import DetectionClient
from client.evaluate import Report, run
from demo.synthetic import write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HELD_OUT_SEED = 987_654
MIN_MAP50 = 0.9


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("held-out")
    annotations = write_dataset(folder, count=50, seed=HELD_OUT_SEED, mixed_fraction=0.5,
                                progress=False)
    return folder / "images", annotations


def _evaluate(server: Any, protocol: str, images: Path, annotations: Path,
              limit: int | None = None) -> Report:
    with DetectionClient(server.http_url, model=server.model_name, protocol=protocol,
                         timeout=120) as client:
        def detect(paths: list[Path]) -> list[list[tuple[Any, float, int]]]:
            results = client.detect(paths, score_threshold=0.05)
            return [[(d.box, d.score, d.label_id) for d in r.detections] for r in results]

        if limit is None:
            return run(detect, images, annotations, progress=False)
        # A smaller set: a COCO file with only the first `limit` images.
        import json

        data = json.loads(annotations.read_text())
        keep = {im["id"] for im in sorted(data["images"], key=lambda im: im["id"])[:limit]}
        data["images"] = [im for im in data["images"] if im["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        small = annotations.with_name("annotations-small.json")
        small.write_text(json.dumps(data))
        return run(detect, images, small, progress=False)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_demo_detector_reaches_map50_on_held_out_pictures(
        demo_server: Any, held_out: tuple[Path, Path], protocol: str) -> None:
    report = _evaluate(demo_server, protocol, *held_out)
    print(f"\n{protocol}:\n{report.format()}")
    assert report.num_images == 50
    assert report.map50 >= MIN_MAP50, report.format()
    assert {c.name for c in report.classes} == {"circle", "square", "triangle", "star"}
    assert all(c.ap50 >= 0.8 for c in report.classes), report.format()


def test_random_weights_fail_the_same_check(served_model: Any,
                                            held_out: tuple[Path, Path]) -> None:
    report = _evaluate(served_model, "v2", *held_out, limit=15)
    assert report.map50 < 0.3, report.format()
