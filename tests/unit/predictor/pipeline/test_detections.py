"""detections: request options, thresholds, class filter, top-k, label names, clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictor.pipeline.detections import (
    LabelMap,
    ParameterError,
    RawDetections,
    RequestOptions,
    select,
)
from predictor.protocol.options import parse_options

LABELS = LabelMap(["__background__", "circle", "square", "triangle", "star"])
DEFAULTS = {"default_threshold": 0.5, "min_threshold": 0.05, "max_detections": 100}


def options(params: object = None) -> RequestOptions:
    return parse_options(params, LABELS, **DEFAULTS)  # type: ignore[arg-type]


def raw(scores: list[float], labels: list[int], boxes: list[list[float]] | None = None
        ) -> RawDetections:
    if boxes is None:
        boxes = [[i, i, i + 10.0, i + 10.0] for i in range(len(scores))]
    return RawDetections(boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                         scores=np.array(scores, dtype=np.float32),
                         labels=np.array(labels, dtype=np.int64))


SAMPLE = raw([0.3, 0.9, 0.6, 0.95, 0.1, 0.7], [1, 2, 1, 3, 4, 2])


# ---- parse_options -----------------------------------------------------------------

def test_defaults_when_no_parameters():
    for params in (None, {}, {"unrelated": 1}):
        opts = options(params)
        assert opts.score_threshold == 0.5
        assert opts.max_detections == 100
        assert opts.class_ids is None


@pytest.mark.parametrize(("value", "expected"), [
    (0.3, 0.3), (1, 1.0), (0.05, 0.05), ("0.3", 0.3), (" 0.25 ", 0.25), ("1e-1", 0.1),
])
def test_score_threshold_accepted(value, expected):
    assert options({"score_threshold": value}).score_threshold == pytest.approx(expected)


@pytest.mark.parametrize(("value", "message"), [
    (math.nan, "out of range"),
    ("nan", "out of range"),
    (-0.1, r"out of range; it must be between 0.05 \(--min_score_threshold\) and 1"),
    (0.01, "--min_score_threshold"),
    (1.5, "out of range"),
    (math.inf, "out of range"),
    (True, "must be a number"),
    ("high", "must be a number, got 'high'"),
    (None, "must be a number"),
    ([0.5], "must be a number"),
])
def test_score_threshold_refused(value, message):
    with pytest.raises(ParameterError, match=f"score_threshold.*{message}"):
        options({"score_threshold": value})


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (100, 100), ("7", 7), (5.0, 5)])
def test_max_detections_accepted(value, expected):
    assert options({"max_detections": value}).max_detections == expected


@pytest.mark.parametrize(("value", "message"), [
    (0, r"out of range; it must be between 1 and 100 \(--max_detections\)"),
    (-3, "out of range"),
    (101, "out of range"),
    (2.5, "must be an integer"),
    (math.nan, "must be an integer"),
    (False, "must be an integer"),
    ("ten", "must be an integer"),
])
def test_max_detections_refused(value, message):
    with pytest.raises(ParameterError, match=f"max_detections.*{message}"):
        options({"max_detections": value})


def test_classes_by_name_by_id_and_comma_string():
    assert options({"classes": ["circle", "star"]}).class_ids == {1, 4}
    assert options({"classes": [2, 3]}).class_ids == {2, 3}
    assert options({"classes": ["circle", 3]}).class_ids == {1, 3}
    assert options({"classes": "square, triangle"}).class_ids == {2, 3}


def test_unknown_class_name_lists_the_known_classes():
    with pytest.raises(ParameterError, match="unknown class name 'hexagon'; known classes: "
                                             "circle, square, triangle, star$"):
        options({"classes": ["circle", "hexagon"]})


def test_background_is_not_a_class_you_can_ask_for():
    with pytest.raises(ParameterError, match="unknown class name '__background__'"):
        options({"classes": ["__background__"]})


def test_long_label_maps_are_listed_in_part():
    many = LabelMap(["__background__"] + [f"c{i}" for i in range(1, 60)])
    with pytest.raises(ParameterError, match=r"known classes: c1, c2, .*c20 \.\.\.$"):
        parse_options({"classes": ["nope"]}, many, **DEFAULTS)


@pytest.mark.parametrize(("classes", "message"), [
    ([0], r"id 0 is out of range; valid ids are 1..4"),
    ([5], r"id 5 is out of range"),
    ([True], "neither a class name nor an id"),
    ([1.0], "neither a class name nor an id"),
    ({"circle": 1}, "must be a list of class names"),
    (3, "must be a list of class names"),
])
def test_bad_classes_refused(classes, message):
    with pytest.raises(ParameterError, match=f"classes: .*{message}|classes {message}"):
        options({"classes": classes})


def test_parameters_must_be_an_object():
    with pytest.raises(ParameterError, match="parameters must be an object, got list"):
        options([("score_threshold", 0.3)])


# ---- select ------------------------------------------------------------------------

def test_score_threshold_keeps_only_confident_detections():
    det = select(SAMPLE, options({"score_threshold": 0.6}), LABELS, (100, 100))
    assert det.scores.tolist() == pytest.approx([0.95, 0.9, 0.7, 0.6])
    assert (det.scores >= 0.6).all()


def test_detections_are_sorted_by_score_with_names_and_matching_boxes():
    det = select(SAMPLE, options({"score_threshold": 0.05}), LABELS, (100, 100))
    assert det.scores.tolist() == pytest.approx([0.95, 0.9, 0.7, 0.6, 0.3, 0.1])
    assert det.label_ids.tolist() == [3, 2, 2, 1, 1, 4]
    assert det.names == ("triangle", "square", "square", "circle", "circle", "star")
    # The box of the 0.95 detection (input row 3) travels with it.
    assert det.boxes[0].tolist() == [3, 3, 13, 13]
    assert det.boxes.dtype == np.float32
    assert det.label_ids.dtype == np.int32
    assert det.image_size == (100, 100)


def test_max_detections_is_the_top_k_by_score():
    det = select(SAMPLE, options({"score_threshold": 0.05, "max_detections": 2}), LABELS,
                 (100, 100))
    assert det.scores.tolist() == pytest.approx([0.95, 0.9])
    assert det.label_ids.tolist() == [3, 2]


def test_class_filter_by_name_and_by_id():
    by_name = select(SAMPLE, options({"score_threshold": 0.05, "classes": ["square"]}), LABELS,
                     (100, 100))
    assert by_name.names == ("square", "square")
    assert by_name.scores.tolist() == pytest.approx([0.9, 0.7])
    by_id = select(SAMPLE, options({"score_threshold": 0.05, "classes": [1, 4]}), LABELS,
                   (100, 100))
    assert set(by_id.label_ids.tolist()) == {1, 4}
    assert len(by_id.scores) == 3


def test_filters_combine():
    opts = options({"score_threshold": 0.5, "classes": ["circle", "square"], "max_detections": 2})
    det = select(SAMPLE, opts, LABELS, (100, 100))
    assert det.names == ("square", "square")
    assert det.scores.tolist() == pytest.approx([0.9, 0.7])


def test_boxes_are_clipped_to_the_image():
    out_of_bounds = raw([0.9, 0.8], [1, 2], [[-5, -3, 70, 40], [10, 20, 300, 500]])
    det = select(out_of_bounds, options(), LABELS, (50, 60))  # height 50, width 60
    assert det.boxes.tolist() == [[0, 0, 60, 40], [10, 20, 60, 50]]


def test_unknown_label_id_gets_a_placeholder_name():
    det = select(raw([0.9], [12]), options(), LABELS, (10, 10))
    assert det.names == ("class_12",)
    assert LABELS.name(-1) == "class_-1"


def test_nothing_above_the_threshold_gives_empty_arrays_of_the_right_shape():
    det = select(SAMPLE, options({"score_threshold": 0.99}), LABELS, (10, 10))
    assert det.boxes.shape == (0, 4)
    assert det.scores.shape == (0,)
    assert det.names == ()
    empty = select(raw([], []), options(), LABELS, (10, 10))
    assert empty.boxes.shape == (0, 4)


def test_class_ids_as_a_string_parameter_as_grpc_sends_them():
    assert options({"classes": "1,3"}).class_ids == {1, 3}
    with pytest.raises(ParameterError, match="id 9 is out of range"):
        options({"classes": "9"})
