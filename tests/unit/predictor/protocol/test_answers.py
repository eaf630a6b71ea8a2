"""protocol answers: detections to the V1 JSON element and to padded V2 tensors."""

from __future__ import annotations

import json

import numpy as np

from predictor.pipeline.detections import Detections
from predictor.protocol.v1 import prediction as to_v1
from predictor.protocol.v2 import OUTPUTS as V2_OUTPUTS
from predictor.protocol.v2 import detection_tensors as to_v2
from tests.support.answers import dets


def test_v1_structure_and_rounding():
    out = to_v1(dets(2, size=(480, 640)))
    assert out["image_size"] == [480, 640]
    assert len(out["detections"]) == 2
    first = out["detections"][0]
    assert set(first) == {"box", "score", "label", "label_id"}
    assert first["box"] == [10.12, 20.99, 100.0, 200.0]
    assert first["score"] == 0.98765
    assert first["label"] == "name1"
    assert first["label_id"] == 1
    assert out["detections"][1]["label_id"] == 2


def test_v1_is_plain_json_without_numpy_types():
    out = to_v1(dets(3))
    text = json.dumps(out)  # numpy scalars would make this raise
    assert json.loads(text) == out
    assert type(out["detections"][0]["label_id"]) is int
    assert type(out["detections"][0]["score"]) is float
    assert type(out["image_size"][0]) is int


def test_v1_no_detections():
    assert to_v1(dets(0, size=(3, 4))) == {"detections": [], "image_size": [3, 4]}


def test_v2_pads_to_the_largest_image_in_the_batch():
    batch = [dets(3), dets(0), dets(1, first_label=4)]
    out = to_v2(batch)
    assert set(out) == {name for name, _, _ in V2_OUTPUTS}
    assert out["detection_boxes"].shape == (3, 3, 4)
    assert out["detection_scores"].shape == (3, 3)
    assert out["detection_classes"].shape == (3, 3)
    assert out["detection_labels"].shape == (3, 3)
    assert out["num_detections"].tolist() == [3, 0, 1]

    assert out["detection_boxes"].dtype == np.float32
    assert out["detection_scores"].dtype == np.float32
    assert out["detection_classes"].dtype == np.int32
    assert out["num_detections"].dtype == np.int32

    # Real rows carry the detections.
    assert np.array_equal(out["detection_boxes"][0], batch[0].boxes)
    assert np.array_equal(out["detection_scores"][0], batch[0].scores)
    assert out["detection_classes"][0].tolist() == [1, 2, 3]
    assert out["detection_labels"][0].tolist() == [b"name1", b"name2", b"name3"]
    assert out["detection_classes"][2, 0] == 4
    assert out["detection_labels"][2, 0] == b"name4"

    # Padding: boxes 0, scores 0, classes -1, labels "".
    assert (out["detection_boxes"][1] == 0).all()
    assert (out["detection_scores"][1] == 0).all()
    assert out["detection_classes"][1].tolist() == [-1, -1, -1]
    assert out["detection_labels"][1].tolist() == [b"", b"", b""]
    assert out["detection_classes"][2, 1:].tolist() == [-1, -1]
    assert (out["detection_boxes"][2, 1:] == 0).all()


def test_v2_labels_are_utf8():
    det = Detections(boxes=np.zeros((1, 4), np.float32), scores=np.ones(1, np.float32),
                     label_ids=np.ones(1, np.int32), names=("crème brûlée",), image_size=(1, 1))
    assert to_v2([det])["detection_labels"][0, 0] == "crème brûlée".encode()


def test_v2_batch_with_no_detections_has_k_zero():
    out = to_v2([dets(0), dets(0)])
    assert out["detection_boxes"].shape == (2, 0, 4)
    assert out["detection_scores"].shape == (2, 0)
    assert out["detection_classes"].shape == (2, 0)
    assert out["detection_labels"].shape == (2, 0)
    assert out["num_detections"].tolist() == [0, 0]


def test_v2_outputs_metadata_matches_the_tensors():
    out = to_v2([dets(2)])
    dtypes = {"FP32": np.float32, "INT32": np.int32, "BYTES": np.object_}
    for name, datatype, shape in V2_OUTPUTS:
        assert out[name].dtype == dtypes[datatype], name
        assert out[name].ndim == len(shape), name
