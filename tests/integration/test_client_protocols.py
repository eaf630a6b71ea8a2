"""The client against the real server: three protocols, one answer.

Uses the session's ``served_model`` (random weights) and a low threshold, so there are
many detections to compare. V1 rounds boxes to 0.01 px, hence that tolerance on boxes.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from client import (
    AsyncDetectionClient,
    BadRequest,
    DetectionClient,
    ImageResult,
    ModelNotFound,
)

pytestmark = pytest.mark.integration

PROTOCOLS = ("v1", "v2", "grpc")
THRESHOLD = 0.05


def pictures() -> list[Any]:
    """A PNG, a JPEG and a pixel array, of different sizes."""
    out: list[Any] = []
    for i, (size, fmt) in enumerate([((320, 240), "PNG"), ((300, 211), "JPEG"),
                                     ((256, 256), None)]):
        img = Image.new("RGB", size, (190 - 40 * i, 215, 175))
        draw = ImageDraw.Draw(img)
        draw.ellipse((30, 20, 130, 120), fill=(220, 30, 30))
        draw.rectangle((150, 90, 230, 170), fill=(30, 30, 220))
        if fmt is None:
            out.append(np.asarray(img))
            continue
        buf = io.BytesIO()
        img.save(buf, fmt, quality=95)
        out.append(buf.getvalue())
    return out


def client_for(served_model: Any, protocol: str, **settings: Any) -> DetectionClient:
    settings.setdefault("model", served_model.model_name)
    return DetectionClient(served_model.http_url, protocol=protocol,  # type: ignore[arg-type]
                           grpc_url=served_model.grpc_url, timeout=120, **settings)


def assert_same(a: ImageResult, b: ImageResult, where: str) -> None:
    assert a.image_size == b.image_size, where
    assert len(a.detections) == len(b.detections), f"{where}: detection counts differ"
    for x, y in zip(a.detections, b.detections, strict=True):
        assert (x.label, x.label_id) == (y.label, y.label_id), where
        assert x.score == pytest.approx(y.score, abs=1e-3), where
        assert x.box == pytest.approx(y.box, abs=1e-2), where


@pytest.fixture(scope="module")
def answers(served_model: Any) -> dict[str, list[ImageResult]]:
    out = {}
    for protocol in PROTOCOLS:
        with client_for(served_model, protocol) as client:
            out[protocol] = client.detect(pictures(), score_threshold=THRESHOLD, batch_size=2)
    return out


def test_all_protocols_give_the_same_detections(answers: dict[str, list[ImageResult]]) -> None:
    reference = answers["v1"]
    assert sum(len(r.detections) for r in reference) > 0, "nothing detected; lower THRESHOLD"
    assert [r.image_size for r in reference] == [(240, 320), (211, 300), (256, 256)]
    for protocol in ("v2", "grpc"):
        for i, (a, b) in enumerate(zip(reference, answers[protocol], strict=True)):
            assert_same(a, b, f"{protocol} image {i}")


def test_boxes_lie_in_the_image_and_scores_are_sorted(
        answers: dict[str, list[ImageResult]]) -> None:
    for result in answers["grpc"]:
        height, width = result.image_size
        scores = [d.score for d in result.detections]
        assert scores == sorted(scores, reverse=True)
        assert all(s >= THRESHOLD for s in scores)
        for det in result.detections:
            x1, y1, x2, y2 = det.box
            assert 0 <= x1 <= x2 <= width
            assert 0 <= y1 <= y2 <= height


def test_async_client_agrees_with_the_sync_one(
        served_model: Any, answers: dict[str, list[ImageResult]]) -> None:
    async def run(protocol: str) -> list[ImageResult]:
        async with AsyncDetectionClient(served_model.http_url, model=served_model.model_name,
                                        protocol=protocol,  # type: ignore[arg-type]
                                        grpc_url=served_model.grpc_url, timeout=120) as client:
            return await client.detect(pictures(), score_threshold=THRESHOLD, batch_size=1,
                                       concurrency=3)

    for protocol in ("v2", "grpc"):
        for i, (a, b) in enumerate(zip(answers[protocol], asyncio.run(run(protocol)), strict=True)):
            assert_same(a, b, f"async {protocol} image {i}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_parameters_reach_the_model(served_model: Any, protocol: str) -> None:
    with client_for(served_model, protocol) as client:
        (result,) = client.detect(pictures()[:1], score_threshold=THRESHOLD, max_detections=3,
                                  classes=["circle", "star"])
    assert len(result.detections) <= 3
    assert {d.label for d in result.detections} <= {"circle", "star"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_metadata(served_model: Any, protocol: str) -> None:
    with client_for(served_model, protocol) as client:
        assert client.wait_ready(timeout=30).ready
        metadata = client.metadata()
    assert metadata.name == served_model.model_name
    assert "image" in [t.name for t in metadata.inputs]
    assert {"detection_boxes", "num_detections"} <= {t.name for t in metadata.outputs}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_and_refused_parameters(served_model: Any, protocol: str) -> None:
    with client_for(served_model, protocol, model="no-such-model", retries=0) as client, \
            pytest.raises(ModelNotFound):
        client.detect_one(pictures()[0])
    with client_for(served_model, protocol, retries=3) as client, \
            pytest.raises(BadRequest) as info:
        client.detect_one(pictures()[0], score_threshold=1.5)
    assert "score_threshold" in info.value.message
