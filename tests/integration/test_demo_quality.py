"""The shipped demo detector really detects, judged through the real server.

50 held-out pictures (a seed the detector never trained on, half of them not square)
go through V1 and V2 REST; COCO-style mAP@0.5 must reach 0.9 on both, and at the
server's default threshold the detector must find the small shapes (28-48 px in the
320 px view the model sees) as well as the larger ones, without more false detections.
The same checks on the random-weights server must fail, so they cannot pass on plumbing
alone. One pass of requests per server and protocol serves both checks.
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
# Recall at score 0.5 by the larger side in the 320 px view. Issue 23's goal (0.90 small,
# 0.98 medium and large on 300 unseen pictures) less a little, for this set of 50 (27
# small, 35 medium, 61 large shapes); the shipped model before it found 9 of the 27.
MIN_RECALL = {"small": 0.85, "medium": 0.95, "large": 0.95}
MAX_FALSE_PER_IMAGE = 0.1


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

        data = json.loads(annotations.read_text(encoding="utf-8"))
        keep = {im["id"] for im in sorted(data["images"], key=lambda im: im["id"])[:limit]}
        data["images"] = [im for im in data["images"] if im["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        small = annotations.with_name("annotations-small.json")
        small.write_text(json.dumps(data))
        return run(detect, images, small, progress=False)


def band_failures(report: Report) -> list[str]:
    """What falls short of the recall-by-size bar; empty when the detector passes."""
    assert report.sizes is not None
    failures = [f"{name}: {band.found}/{band.total} = {band.recall:.3f} < {bar}"
                for name, bar in MIN_RECALL.items()
                if not (band := report.sizes.band("side", name)).recall >= bar]
    if report.sizes.false_per_image > MAX_FALSE_PER_IMAGE:
        failures.append(f"{report.sizes.false_per_image:.3f} false detections per picture "
                        f"> {MAX_FALSE_PER_IMAGE}")
    return failures


@pytest.fixture(scope="module", params=["v1", "v2"])
def demo_report(request: pytest.FixtureRequest, demo_server: Any,
                held_out: tuple[Path, Path]) -> Report:
    report = _evaluate(demo_server, request.param, *held_out)
    print(f"\n{request.param}:\n{report.format()}")
    return report


@pytest.fixture(scope="module")
def random_report(served_model: Any, held_out: tuple[Path, Path]) -> Report:
    return _evaluate(served_model, "v2", *held_out, limit=15)


def test_demo_detector_reaches_map50_on_held_out_pictures(demo_report: Report) -> None:
    report = demo_report
    assert report.num_images == 50
    assert report.map50 >= MIN_MAP50, report.format()
    assert {c.name for c in report.classes} == {"circle", "square", "triangle", "star"}
    assert all(c.ap50 >= 0.8 for c in report.classes), report.format()


def test_demo_detector_finds_small_shapes_at_the_default_threshold(demo_report: Report) -> None:
    assert demo_report.sizes is not None
    assert demo_report.sizes.score_threshold == 0.5  # what a user sees by default
    assert band_failures(demo_report) == [], demo_report.format()


def test_random_weights_fail_the_same_check(random_report: Report) -> None:
    assert random_report.map50 < 0.3, random_report.format()


def test_random_weights_fail_the_same_band_check(random_report: Report) -> None:
    failures = band_failures(random_report)
    assert any(f.startswith("small:") for f in failures), random_report.format()
