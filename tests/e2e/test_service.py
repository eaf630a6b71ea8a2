"""What a user of the running service sees, whatever runs it (process, container, cluster).

Uses the project's own client for the happy paths and plain HTTP/gRPC for the errors,
so the wire contract itself is what is checked.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest

from client import DetectionClient, ModelNotFound
from client.evaluate import box_iou
from demo.synthetic import CLASSES, make_sample
from tests.support.e2e import Target

pytestmark = pytest.mark.e2e

PROTOCOLS = ("v1", "v2", "grpc")


def _client(target: Target, protocol: str, model: str | None = None) -> DetectionClient:
    return DetectionClient(target.http_url, model=model or target.model_name, protocol=protocol,
                           grpc_url=target.grpc_url, host_header=target.host_header,
                           timeout=60, retries=2)


def _headers(target: Target) -> dict[str, str]:
    return {"Host": target.host_header} if target.host_header else {}


def _pictures(count: int = 3) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    out = []
    for seed in range(1000, 1000 + count):
        image, boxes, labels = make_sample(seed)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append((buf.getvalue(), boxes, labels))
    return out


def _serves_demo(target: Target) -> bool:
    """True when the service knows the demo's class names (so detections can be judged)."""
    png = _pictures(1)[0][0]
    r = httpx.post(f"{target.http_url}/v1/models/{target.model_name}:predict",
                   json={"instances": [{"b64": base64.b64encode(png).decode()}],
                         "parameters": {"classes": list(CLASSES)}},
                   headers=_headers(target), timeout=60)
    return r.status_code == 200


def test_live_ready_and_metadata(target: Target) -> None:
    with _client(target, "v2") as client:
        health = client.health()
        assert health.live
        assert health.ready
        meta = client.metadata()
    assert [t.name for t in meta.inputs] == ["image"]
    assert {t.name for t in meta.outputs} == {"detection_boxes", "detection_scores",
                                              "detection_classes", "detection_labels",
                                              "num_detections"}


def test_every_protocol_gives_the_same_detections(target: Target) -> None:
    images = [png for png, _, _ in _pictures()]
    answers = {}
    for protocol in PROTOCOLS:
        with _client(target, protocol) as client:
            answers[protocol] = client.detect(images, score_threshold=0.3)
    for protocol in ("v2", "grpc"):
        for a, b in zip(answers["v1"], answers[protocol], strict=True):
            assert a.image_size == b.image_size == (320, 320)
            assert [d.label for d in a.detections] == [d.label for d in b.detections], protocol
            for da, db in zip(a.detections, b.detections, strict=True):
                assert da.box == pytest.approx(db.box, abs=0.02)
                assert da.score == pytest.approx(db.score, abs=1e-3)


def test_demo_detector_finds_the_shapes(target: Target) -> None:
    if not target.demo or not _serves_demo(target):
        pytest.skip("the service does not serve the trained demo detector (E2E_DEMO=0, or "
                    "predictor/demo/model is absent)")
    found = total = 0
    with _client(target, "v2") as client:
        for png, boxes, labels in _pictures(6):
            result = client.detect_one(png, score_threshold=0.5)
            for box, label in zip(boxes, labels, strict=True):
                total += 1
                name = CLASSES[int(label) - 1]
                same = [d.box for d in result.detections if d.label == name]
                found += bool((box_iou(same, [box]) >= 0.5).any())
    assert found / total >= 0.8, f"found {found} of {total} shapes"


def test_bad_input_is_a_400_that_names_the_problem(target: Target) -> None:
    url = f"{target.http_url}/v1/models/{target.model_name}:predict"
    r = httpx.post(url, json={"instances": [{"b64": base64.b64encode(b"not an image").decode()}]},
                   headers=_headers(target), timeout=30)
    assert r.status_code == 400
    assert "not an image" in r.json()["error"]
    r = httpx.post(url, json={"instances": [{"b64": base64.b64encode(_pictures(1)[0][0]).decode()}],
                              "parameters": {"score_threshold": 7}},
                   headers=_headers(target), timeout=30)
    assert r.status_code == 400
    assert "score_threshold" in r.json()["error"]
    # gRPC, by hand: the project's client refuses unreadable files before sending them.
    import grpc

    from client.protos import inference_pb2 as pb
    from client.protos import inference_pb2_grpc as pbg

    bogus = b"GIF89a but not really"
    request = pb.ModelInferRequest(
        model_name=target.model_name,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(bogus).to_bytes(4, "little") + bogus])
    options = [("grpc.default_authority", target.host_header)] if target.host_header else []
    with grpc.insecure_channel(target.grpc_url, options=options) as channel, \
            pytest.raises(grpc.RpcError) as err:
        pbg.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image" in (err.value.details() or "")
    # the service still answers after the bad requests
    with _client(target, "v1") as client:
        assert client.health().ready


def test_unknown_model_is_a_404(target: Target) -> None:
    with _client(target, "v2", model="no-such-model") as client, pytest.raises(ModelNotFound):
        client.detect_one(_pictures(1)[0][0])
