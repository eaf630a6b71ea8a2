"""The gRPC client against a small in-process Open Inference Protocol server."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from client import (
    AsyncDetectionClient,
    BadRequest,
    DetectionClient,
    ModelNotFound,
    Overloaded,
    ServerUnreachable,
)
from client._grpc import channel_options, pb, pb_grpc
from client._tensors import pack_bytes, unpack_bytes


def png(width: int = 8, height: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class FakeModel(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Answers every image with one 'square' whose score is 0.5 + its index / 100."""

    requests: list[Any] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    busy_answers: int = 0

    def _record(self, context: grpc.ServicerContext) -> None:
        self.metadata.append({m.key: m.value for m in context.invocation_metadata()})

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._record(context)
        self.requests.append(request)
        if request.model_name != "detector":
            context.abort(grpc.StatusCode.NOT_FOUND, f"Model with name {request.model_name} "
                                                     "does not exist.")
        if self.busy_answers > 0:
            self.busy_answers -= 1
            context.set_trailing_metadata((("retry-after", "1.5"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "queue is full")
        if request.parameters["score_threshold"].double_param > 0.99:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "score_threshold too high")
        count = int(request.inputs[0].shape[0])
        response = pb.ModelInferResponse(model_name="detector")
        tensors = [
            ("detection_boxes", "FP32", [count, 1, 4],
             np.tile(np.array([1, 2, 3, 4], np.float32), (count, 1, 1)).tobytes()),
            ("detection_scores", "FP32", [count, 1],
             (0.5 + np.arange(count, dtype=np.float32) / 100).tobytes()),
            ("detection_classes", "INT32", [count, 1], np.full(count, 2, np.int32).tobytes()),
            ("detection_labels", "BYTES", [count, 1], pack_bytes([b"square"] * count)),
            ("num_detections", "INT32", [count], np.ones(count, np.int32).tobytes()),
        ]
        for name, datatype, shape, raw in tensors:
            response.outputs.add(name=name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(raw)
        return response

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._record(context)
        if request.name != "detector":
            context.abort(grpc.StatusCode.NOT_FOUND, f"Model with name {request.name} "
                                                     "does not exist.")
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        response = pb.ModelMetadataResponse(name=request.name, platform="fake",
                                            versions=["1"])
        response.inputs.add(name="image", datatype="BYTES", shape=[-1])
        return response


@pytest.fixture
def served() -> Iterator[tuple[FakeModel, str]]:
    model = FakeModel()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(model, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield model, f"127.0.0.1:{port}"
    server.stop(grace=None)


def grpc_client(target: str, **settings: Any) -> DetectionClient:
    settings.setdefault("sleep", lambda _s: None)
    return DetectionClient("http://127.0.0.1:1", protocol="grpc", grpc_url=target, **settings)


def test_encoded_images_travel_length_prefixed_in_raw_input_contents(
        served: tuple[FakeModel, str]) -> None:
    model, target = served
    first, second = png(8, 6), png(3, 3)
    with grpc_client(target) as client:
        results = client.detect([first, second], score_threshold=0.4, max_detections=7,
                                classes=["square", "star"])
    (request,) = model.requests
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("image", "BYTES", [2])
    raw = request.raw_input_contents[0]
    assert raw[:4] == struct.pack("<I", len(first))
    assert unpack_bytes(raw) == [first, second]
    assert request.parameters["score_threshold"].double_param == pytest.approx(0.4)
    assert request.parameters["max_detections"].int64_param == 7
    assert request.parameters["classes"].string_param == "square,star"
    assert [r.detections[0].score for r in results] == pytest.approx([0.5, 0.51])
    assert results[0].detections[0].label == "square"
    assert results[0].detections[0].box == (1.0, 2.0, 3.0, 4.0)
    assert results[1].image_size == (3, 3)


def test_pixel_batches_travel_as_uint8(served: tuple[FakeModel, str]) -> None:
    model, target = served
    pixels = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    with grpc_client(target) as client:
        client.detect(pixels)
    tensor = model.requests[0].inputs[0]
    assert (tensor.datatype, list(tensor.shape)) == ("UINT8", [2, 4, 5, 3])
    assert model.requests[0].raw_input_contents[0] == pixels.tobytes()


def test_token_and_extra_headers_reach_the_server_as_metadata(
        served: tuple[FakeModel, str]) -> None:
    model, target = served
    with grpc_client(target, token="abc", host_header="detector.example.com",
                     headers={"X-Trace": "t1"}) as client:
        assert client.health().ready
    assert model.metadata[0]["authorization"] == "Bearer abc"
    assert model.metadata[0]["x-trace"] == "t1"
    assert "host" not in model.metadata[0]  # gRPC carries the host as :authority instead
    # grpc's Python server does not expose :authority, so check the channel is asked to set it.
    assert ("grpc.default_authority", "detector.example.com") in channel_options(client.config)


def test_unavailable_is_retried_honouring_retry_after(served: tuple[FakeModel, str]) -> None:
    model, target = served
    model.busy_answers = 2
    sleeps: list[float] = []
    with grpc_client(target, sleep=sleeps.append, retries=3) as client:
        assert client.detect_one(png()).detections
    assert sleeps == [1.5, 1.5]
    model.busy_answers = 5
    with grpc_client(target, retries=1) as client, pytest.raises(Overloaded, match="queue"):
        client.detect_one(png())


def test_status_codes_map_to_the_exception_tree(served: tuple[FakeModel, str]) -> None:
    model, target = served
    with grpc_client(target, retries=3) as client, pytest.raises(BadRequest) as info:
        client.detect_one(png(), score_threshold=1.0)
    assert info.value.message == "score_threshold too high"
    assert len(model.requests) == 1  # never retried
    with grpc_client(target, model="nope") as client, pytest.raises(ModelNotFound, match="nope"):
        client.health()


def test_metadata_over_grpc(served: tuple[FakeModel, str]) -> None:
    _, target = served
    with grpc_client(target) as client:
        metadata = client.metadata()
    assert (metadata.name, metadata.platform) == ("detector", "fake")
    assert metadata.inputs[0].shape == (-1,)


def test_closed_port_is_unreachable() -> None:
    with grpc_client("127.0.0.1:1", retries=0, timeout=5) as client, \
            pytest.raises(ServerUnreachable, match="127.0.0.1:1"):
        client.detect_one(png())


def test_async_grpc_client_keeps_order_across_concurrent_batches(
        served: tuple[FakeModel, str]) -> None:
    model, target = served

    async def run() -> list[float]:
        async with AsyncDetectionClient("http://127.0.0.1:1", protocol="grpc",
                                        grpc_url=target, token="t") as client:
            assert (await client.health()).ready
            results = await client.detect([png()] * 5, batch_size=2, concurrency=3)
            return [r.detections[0].score for r in results]

    scores = asyncio.run(run())
    assert scores == pytest.approx([0.5, 0.51, 0.5, 0.51, 0.5])
    assert sorted(int(r.inputs[0].shape[0]) for r in model.requests) == [1, 2, 2]
    assert model.metadata[-1]["authorization"] == "Bearer t"
