"""``--gpu_decode``: JPEGs decoded by torchvision on the model's device give the same
answers as PIL's decode; what torchvision cannot read stays a 400. Runs on the CPU
(torchvision's CPU JPEG decoder), so the plumbing is checked on every machine."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import pytest
import torch
from kserve.errors import InvalidInput
from PIL import Image

from demo.synthetic import make_sample
from predictor.config import DEMO_MODEL_DIR, BatchingConfig, ModelConfig, ServerConfig
from predictor.model import DetectionModel
from predictor.protocol.v1 import parse_v1


def _model(gpu_decode: bool) -> DetectionModel:
    cfg = ServerConfig(model=ModelConfig(model_dir=str(DEMO_MODEL_DIR), device="cpu",
                                         gpu_decode=gpu_decode),
                       batching=BatchingConfig(max_batch_delay_ms=0))
    model = DetectionModel(cfg)
    model.load()
    return model


def _call(model: DetectionModel, data: bytes) -> Any:
    async def go() -> Any:
        model.batcher.start()  # on this event loop
        body = {"instances": [{"b64": base64.b64encode(data).decode()}],
                "parameters": {"score_threshold": 0.3}}
        try:
            job = await model.preprocess(parse_v1(body, 64))
            images = job.images
            job = await model.predict(job)
            return images, await model.postprocess(job)
        finally:
            await model.batcher.stop(5)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def models() -> tuple[DetectionModel, DetectionModel]:
    return _model(False), _model(True)


def _rotated_jpeg() -> bytes:
    picture, _, _ = make_sample(11, size=(360, 280), min_objects=3, max_objects=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers turn it 90 degrees clockwise
    buf = io.BytesIO()
    picture.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def test_device_decode_gives_the_same_detections(
        models: tuple[DetectionModel, DetectionModel]) -> None:
    data = _rotated_jpeg()
    (pil_images, pil_out), (tv_images, tv_out) = (_call(m, data) for m in models)
    assert isinstance(tv_images[0], torch.Tensor)  # really went through torchvision
    assert not isinstance(pil_images[0], torch.Tensor)
    a, b = pil_out["predictions"][0], tv_out["predictions"][0]
    assert a["image_size"] == b["image_size"] == [280, 360]  # EXIF orientation applied
    assert len(a["detections"]) == len(b["detections"]) >= 2
    for da, db in zip(a["detections"], b["detections"], strict=True):
        assert da["label"] == db["label"]
        assert da["box"] == pytest.approx(db["box"], abs=2.0)


def test_device_decode_keeps_errors_and_other_formats(
        models: tuple[DetectionModel, DetectionModel]) -> None:
    tv_model = models[1]
    data = _rotated_jpeg()
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        _call(tv_model, data[: len(data) // 2])
    buf = io.BytesIO()
    make_sample(3)[0].save(buf, "PNG")
    images, out = _call(tv_model, buf.getvalue())
    assert not isinstance(images[0], torch.Tensor)  # PNG still decoded by PIL
    assert out["predictions"][0]["image_size"] == [320, 320]
