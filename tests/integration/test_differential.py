"""The differential matrix: every request form, client and option against the engine itself.

The real server (the trained demo detector, default flags) is driven by clients this
project did not write (KServe's REST and gRPC clients, Triton's HTTP and gRPC clients,
plain httpx on one pooled connection). Every answer must equal the engine called
directly, in this process, on the same decoded pixels with the same options. The
pictures give every kind of answer: no detection at all (the most common picture in
production), exactly one, many, a batch mixing empty and non-empty, and 32 pictures.
Explicit cells cover each axis; hypothesis draws the cross-product.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline.decode import ImageLimits, decode_image
from predictor.pipeline.detections import LabelMap, RawDetections, select
from predictor.pipeline.engine import Engine
from predictor.protocol.options import parse_options
from tests.support.clients import CONTENT_TYPES, OUTPUT_NAMES, Senders, Tensors

pytestmark = pytest.mark.integration

SIZE = 320
KINDS = ("none", "one", "many", "mixed", "32")
PARAMS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "lowest threshold": {"score_threshold": 0.05},
    "threshold 1": {"score_threshold": 1.0},
    "max_detections 1": {"max_detections": 1},
    "classes list": {"classes": ["circle", "square"]},
    "classes string": {"classes": "triangle,star"},
    "classes and threshold": {"classes": ["star"], "score_threshold": 0.3, "max_detections": 2},
}
SENDERS = ("v1-json", "v1-json-image", "v1-json-b64", "v2-json-bytes", "v2-json-uint8",
           "v2-binary-bytes", "v2-binary-uint8", "kserve-rest-v1", "kserve-rest-v2",
           "kserve-rest-v2-uint8", "kserve-grpc-bytes", "kserve-grpc-uint8", "triton-http-binary",
           "triton-http-json", "triton-grpc-bytes", "triton-grpc-uint8")


def send(senders: Senders, name: str, images: Sequence[bytes], params: dict[str, Any]) -> Tensors:
    """One request through the named client and form."""
    s = senders
    table: dict[str, Any] = {
        "v1-json": lambda: s.v1_json(images, params),
        "v1-json-image": lambda: s.v1_json(images, params, spelling="image"),
        "v1-json-b64": lambda: s.v1_json(images, params, spelling="b64"),
        "v2-json-bytes": lambda: s.v2_json(images, params),
        "v2-json-uint8": lambda: s.v2_json(images, params, uint8=True),
        "v2-binary-bytes": lambda: s.v2_binary(images, params),
        "v2-binary-uint8": lambda: s.v2_binary(images, params, uint8=True),
        "kserve-rest-v1": lambda: s.kserve_rest_v1(images, params),
        "kserve-rest-v2": lambda: s.kserve_rest_v2(images, params),
        "kserve-rest-v2-uint8": lambda: s.kserve_rest_v2(images, params, uint8=True),
        "kserve-grpc-bytes": lambda: s.kserve_grpc(images, params),
        "kserve-grpc-uint8": lambda: s.kserve_grpc(images, params, uint8=True),
        "triton-http-binary": lambda: s.triton_http(images, params),
        "triton-http-json": lambda: s.triton_http(images, params, binary=False),
        "triton-grpc-bytes": lambda: s.triton_grpc(images, params),
        "triton-grpc-uint8": lambda: s.triton_grpc(images, params, uint8=True),
    }
    return table[name]()


@dataclass
class Reference:
    """The engine in this process, on the same pixels, with the server's defaults."""

    engine: Engine
    labels: LabelMap
    raw: dict[bytes, tuple[RawDetections, tuple[int, int]]]

    def detect(self, data: bytes) -> tuple[RawDetections, tuple[int, int]]:
        if data not in self.raw:
            pixels = decode_image(data, ImageLimits())
            self.raw[data] = (self.engine.run([pixels])[0], pixels.shape[:2])
        return self.raw[data]

    def expected(self, images: Sequence[bytes], params: dict[str, Any]) -> Tensors:
        """What the server must answer, in V2 tensors."""
        cfg = self.engine.cfg
        options = parse_options(params, self.labels, default_threshold=cfg.score_threshold,
                                min_threshold=cfg.min_score_threshold,
                                max_detections=cfg.max_detections)
        dets = [select(raw, options, self.labels, size)
                for raw, size in (self.detect(b) for b in images)]
        k = max((len(d.scores) for d in dets), default=0)
        out: Tensors = {"detection_boxes": np.zeros((len(dets), k, 4), np.float32),
                        "detection_scores": np.zeros((len(dets), k), np.float32),
                        "detection_classes": np.full((len(dets), k), -1, np.int32),
                        "detection_labels": np.full((len(dets), k), b"", object),
                        "num_detections": np.array([len(d.scores) for d in dets], np.int32)}
        for i, d in enumerate(dets):
            n = len(d.scores)
            out["detection_boxes"][i, :n] = d.boxes
            out["detection_scores"][i, :n] = d.scores
            out["detection_classes"][i, :n] = d.label_ids
            out["detection_labels"][i, :n] = [x.encode() for x in d.names]
        return out


def assert_same(got: Tensors, want: Tensors, where: str) -> None:
    """Equal detections: ids, labels and counts exactly; boxes and scores to wire rounding."""
    assert set(got) <= set(want), f"{where}: unexpected outputs {sorted(set(got) - set(want))}"
    for name, array in got.items():
        expected = want[name]
        assert list(array.shape) == list(expected.shape), (
            f"{where}: {name} has shape {list(array.shape)}, expected {list(expected.shape)}")
        if name in ("detection_boxes", "detection_scores"):
            # V1 rounds boxes to 2 decimals and scores to 5.
            tol = 0.006 if name == "detection_boxes" else 1e-4
            np.testing.assert_allclose(array.astype(np.float32), expected, atol=tol,
                                       err_msg=f"{where}: {name}")
        else:
            assert array.reshape(-1).tolist() == expected.reshape(-1).tolist(), (
                f"{where}: {name}")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def reference() -> Reference:
    engine = Engine(ModelConfig(model_dir=str(DEMO_MODEL_DIR)))
    loaded = engine.load()
    return Reference(engine, LabelMap(loaded.labels), {})


@pytest.fixture(scope="module")
def pictures(reference: Reference) -> dict[str, list[bytes]]:
    """Pictures by the kind of answer they get at the default threshold (0.5)."""
    from demo.synthetic import make_sample

    def count(data: bytes) -> int:
        raw, _ = reference.detect(data)
        return int((raw.scores >= 0.5).sum())

    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(buf, "JPEG", quality=90)
    blank = buf.getvalue()
    assert count(blank) == 0
    ones, manys = [], []
    for seed in range(200):
        if len(ones) >= 6 and len(manys) >= 6:
            break
        objects = 1 if seed % 2 == 0 else 4
        data = _png(make_sample(10_000 + seed, SIZE, objects, objects)[0])
        found = count(data)
        if found == 1 and len(ones) < 6:
            ones.append(data)
        elif found >= 3 and len(manys) < 6:
            manys.append(data)
    assert len(ones) == 6
    assert len(manys) == 6
    mixed = [blank, ones[0], manys[0], blank]
    many32 = [([blank] + ones + manys)[i % 13] for i in range(32)]
    return {"none": [blank], "one": [ones[0]], "many": [manys[0]], "mixed": mixed, "32": many32}


@pytest.fixture(scope="module")
def senders(demo_server: Any) -> Iterator[Senders]:
    s = Senders(demo_server.http_url, demo_server.grpc_url)
    yield s
    s.close()


def check(senders: Senders, reference: Reference, sender: str, images: Sequence[bytes],
          params: dict[str, Any], where: str) -> Tensors:
    got = send(senders, sender, images, params)
    assert set(got) == set(OUTPUT_NAMES), f"{where}: outputs {sorted(got)}"
    assert_same(got, reference.expected(images, params), where)
    return got


# ---- every client and form x every kind of answer ---------------------------------------

# 32 pictures through five clients (one per protocol family); the others get four kinds.
CELLS = [(s, k) for s in SENDERS for k in KINDS[:4]] + [
    (s, "32") for s in ("v1-json", "v2-binary-bytes", "kserve-grpc-bytes", "triton-grpc-uint8",
                        "triton-http-json")]


@pytest.mark.parametrize(("sender", "kind"), CELLS)
def test_every_client_gets_the_engines_answer(senders: Senders, reference: Reference,
                                              pictures: dict[str, list[bytes]], sender: str,
                                              kind: str) -> None:
    got = check(senders, reference, sender, pictures[kind], {}, f"{sender}/{kind}")
    counts = got["num_detections"].tolist()
    if kind == "none":
        assert counts == [0]
    elif kind == "one":
        assert counts == [1]
    elif kind == "mixed":
        assert counts[0] == counts[3] == 0
        assert counts[1] == 1
        assert counts[2] >= 3


@pytest.mark.parametrize("kind", ["none", "one", "many"])
@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/octet-stream",
                                          "text/plain", None])
def test_v1_raw_body_whatever_its_content_type(senders: Senders, reference: Reference,
                                               pictures: dict[str, list[bytes]], kind: str,
                                               content_type: str | None) -> None:
    images = pictures[kind]
    got = senders.v1_raw(images, {}, content_type=content_type)
    assert_same(got, reference.expected(images, {}), f"raw/{content_type}/{kind}")


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("form", ["v1", "v2"])
def test_json_whatever_the_media_type_parameters(senders: Senders, reference: Reference,
                                                 pictures: dict[str, list[bytes]], form: str,
                                                 content_type: str | None) -> None:
    images = pictures["mixed"]
    params = {"classes": ["circle", "triangle"], "score_threshold": 0.3}
    if form == "v1":
        got = senders.v1_json(images, params, content_type=content_type)
    else:
        got = senders.v2_json(images, params, content_type=content_type)
    assert_same(got, reference.expected(images, params), f"{form}/{content_type}")


# ---- every parameter form ----------------------------------------------------------------

@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("sender", ["v1-json", "v2-json-bytes", "kserve-grpc-bytes",
                                    "triton-http-binary", "triton-grpc-bytes"])
def test_parameters_mean_the_same_everywhere(senders: Senders, reference: Reference,
                                             pictures: dict[str, list[bytes]], sender: str,
                                             params: dict[str, Any]) -> None:
    check(senders, reference, sender, pictures["mixed"], params, f"{sender}/{params}")


@pytest.mark.parametrize("sender", SENDERS)
def test_a_class_filter_that_removes_everything(senders: Senders, reference: Reference,
                                                pictures: dict[str, list[bytes]],
                                                sender: str) -> None:
    images = pictures["one"]
    raw, _ = reference.detect(images[0])
    present = int(raw.labels[raw.scores >= 0.5][0])
    absent = next(name for i, name in enumerate(reference.labels.names) if i not in (0, present))
    got = check(senders, reference, sender, images, {"classes": [absent]}, sender)
    assert got["num_detections"].tolist() == [0]


def test_threshold_1_leaves_nothing(senders: Senders, reference: Reference,
                                   pictures: dict[str, list[bytes]]) -> None:
    got = check(senders, reference, "kserve-rest-v2", pictures["many"], {"score_threshold": 1.0},
                "threshold 1")
    assert got["num_detections"].tolist() == [0]


# ---- outputs asked for -------------------------------------------------------------------

OUTPUT_CASES = {
    "one output": [{"name": "num_detections"}],
    "two, binary and JSON": [{"name": "detection_labels", "parameters": {"binary_data": True}},
                             {"name": "detection_scores", "parameters": {"binary_data": False}}],
    "all, one binary": [{"name": n, "parameters": {"binary_data": n == "detection_boxes"}}
                        for n in OUTPUT_NAMES],
}


@pytest.mark.parametrize("outputs", OUTPUT_CASES.values(), ids=OUTPUT_CASES.keys())
@pytest.mark.parametrize("kind", ["none", "mixed"])
def test_requested_outputs_over_rest(senders: Senders, reference: Reference,
                                     pictures: dict[str, list[bytes]], outputs: list[Any],
                                     kind: str) -> None:
    want = reference.expected(pictures[kind], {})
    names = [o["name"] for o in outputs]
    for via in ("httpx", "triton"):
        if via == "httpx":
            got = senders.v2_json(pictures[kind], {}, outputs=outputs)
        else:
            got = senders.triton_http(pictures[kind], {}, outputs=[
                (o["name"], o["parameters"]["binary_data"] if "parameters" in o else False)
                for o in outputs])
        assert sorted(got) == sorted(names), via
        assert_same(got, want, f"{via}/{names}")


@pytest.mark.parametrize("sender", ["kserve-rest-v2", "kserve-grpc-bytes", "triton-grpc-bytes",
                                    "v2-binary-bytes"])
def test_requested_outputs_are_the_only_ones_answered(senders: Senders, reference: Reference,
                                                      pictures: dict[str, list[bytes]],
                                                      sender: str) -> None:
    images = pictures["mixed"]
    names = ["num_detections", "detection_classes"]
    if sender == "kserve-rest-v2":
        got = senders.kserve_rest_v2(images, {}, outputs=names)
    elif sender == "kserve-grpc-bytes":
        got = senders.kserve_grpc(images, {}, outputs=names)
    elif sender == "triton-grpc-bytes":
        got = senders.triton_grpc(images, {}, outputs=names)
    else:
        got = senders.v2_binary(images, {}, outputs=[{"name": n} for n in names])
    assert sorted(got) == sorted(names)
    assert_same(got, reference.expected(images, {}), sender)


# ---- the cross-product, drawn ------------------------------------------------------------

@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sender=st.sampled_from(SENDERS), kind=st.sampled_from(KINDS[:4]),
       params=st.sampled_from(list(PARAMS.values())))
def test_drawn_cells_match_the_engine(senders: Senders, reference: Reference,
                                      pictures: dict[str, list[bytes]], sender: str, kind: str,
                                      params: dict[str, Any]) -> None:
    check(senders, reference, sender, pictures[kind], params, f"{sender}/{kind}/{params}")
