"""The three ways a client asks for detections, each reduced to one comparable form.

V1 JSON, V2 REST JSON and V2 gRPC are sent with plain httpx / grpcio and KServe's own
gRPC stubs (not the project's client), so the container is checked against the wire
contract itself. Each call returns a list of :class:`Det` for one image.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

_NP_TYPES = {"FP32": "<f4", "INT32": "<i4", "INT64": "<i8", "UINT8": "u1"}


@dataclass(frozen=True)
class Det:
    """One detection: label name and id, score, box ``[x1, y1, x2, y2]`` in pixels."""

    label: str
    label_id: int
    score: float
    box: tuple[float, float, float, float]


def v1_predict(http_url: str, model: str, image: bytes,
               parameters: dict[str, Any] | None = None) -> list[Det]:
    """V1 ``:predict`` with one base64 instance."""
    body: dict[str, Any] = {
        "instances": [{"image_bytes": {"b64": base64.b64encode(image).decode()}}]}
    if parameters:
        body["parameters"] = parameters
    resp = httpx.post(f"{http_url}/v1/models/{model}:predict", json=body, timeout=60)
    resp.raise_for_status()
    dets = resp.json()["predictions"][0]["detections"]
    return [Det(d["label"], int(d["label_id"]), float(d["score"]),
                tuple(float(v) for v in d["box"])) for d in dets]  # type: ignore[arg-type]


def _tensors_to_dets(tensors: dict[str, np.ndarray]) -> list[Det]:
    n = int(tensors["num_detections"].reshape(-1)[0])
    boxes = tensors["detection_boxes"].reshape(-1, 4)
    scores = tensors["detection_scores"].reshape(-1)
    classes = tensors["detection_classes"].reshape(-1)
    labels = tensors["detection_labels"].reshape(-1)
    return [Det(labels[i].decode() if isinstance(labels[i], bytes) else str(labels[i]),
                int(classes[i]), float(scores[i]), tuple(float(v) for v in boxes[i]))
            for i in range(n)]  # type: ignore[misc]


def v2_infer_rest(http_url: str, model: str, image: bytes,
                  parameters: dict[str, Any] | None = None) -> list[Det]:
    """V2 REST ``/infer`` with the image as a base64 BYTES element (JSON)."""
    body: dict[str, Any] = {"inputs": [{
        "name": "image", "shape": [1], "datatype": "BYTES",
        "data": [base64.b64encode(image).decode()]}]}
    if parameters:
        body["parameters"] = parameters
    resp = httpx.post(f"{http_url}/v2/models/{model}/infer", json=body, timeout=60)
    resp.raise_for_status()
    tensors = {}
    for out in resp.json()["outputs"]:
        data = out["data"]
        if out["datatype"] == "BYTES":
            tensors[out["name"]] = np.array(data, dtype=object).reshape(out["shape"])
        else:
            tensors[out["name"]] = np.asarray(data, dtype=_NP_TYPES[out["datatype"]]).reshape(
                out["shape"])
    return _tensors_to_dets(tensors)


def _split_bytes(raw: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        (size,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + size])
        pos += 4 + size
    return items


def grpc_infer(target: str, model: str, image: bytes,
               parameters: dict[str, Any] | None = None) -> list[Det]:
    """V2 gRPC ``ModelInfer`` with the encoded image in ``raw_input_contents``."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    target = target.removeprefix("grpc://")
    request = pb.ModelInferRequest(model_name=model, inputs=[
        pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])])
    request.raw_input_contents.append(struct.pack("<I", len(image)) + image)
    for key, value in (parameters or {}).items():
        param = request.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, (float, str)):
            # KServe's InferParameter has no double_param: a float travels as text.
            param.string_param = str(value)
        else:  # class lists travel as one comma-separated string
            param.string_param = ",".join(value)
    with grpc.insecure_channel(target) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    tensors = {}
    for out, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if out.datatype == "BYTES":
            arr = np.array(_split_bytes(raw), dtype=object)
        else:
            arr = np.frombuffer(raw, dtype=_NP_TYPES[out.datatype])
        tensors[out.name] = arr.reshape(list(out.shape))
    return _tensors_to_dets(tensors)


def assert_same_detections(got: list[Det], want: list[Det], what: str) -> None:
    """Same labels in the same order, boxes within 0.05 px, scores within 1e-3."""
    assert [(d.label, d.label_id) for d in got] == [(d.label, d.label_id) for d in want], (
        f"{what}: labels differ\n got {got}\nwant {want}")
    if want:
        np.testing.assert_allclose([d.box for d in got], [d.box for d in want], atol=0.05,
                                   err_msg=f"{what}: boxes differ")
        np.testing.assert_allclose([d.score for d in got], [d.score for d in want], atol=1e-3,
                                   err_msg=f"{what}: scores differ")
