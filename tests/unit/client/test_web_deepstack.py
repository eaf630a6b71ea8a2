"""The DeepStack API's pure parts: how a result becomes ``predictions``, the key, the cap,
the files the flags name. The routes against the real service are in
tests/integration/test_web_deepstack.py."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import predictor.config
from client import ClientConfig, ConfigError, Detection, ImageResult
from client.web import WebSettings
from client.web.deepstack import answer, predictions, score_threshold
from client.web.errors import ApiError, error_body
from client.web.guard import InFlight, KeyCheck
from client.web.metrics import WebMetrics
from client.web.settings import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MIN_SCORE_THRESHOLD,
    read_api_key,
    read_label_map,
)


def det(box: tuple[float, float, float, float], score: float, label: str) -> Detection:
    return Detection(box=box, score=score, label=label, label_id=1)


RESULT = ImageResult(detections=(
    det((10.4, 20.5, 99.5, 60.49), 0.61, "circle"),
    det((-0.3, 0.2, 320.7, 240.0), 0.93, "star"),
    det((5.0, 5.0, 6.0, 6.0), 0.75, "square"),
), image_size=(240, 320))


def test_predictions_are_whole_pixels_inside_the_picture_best_first_labels_mapped() -> None:
    got = predictions(RESULT, {"circle": "person", "square": "car"})
    assert [p["label"] for p in got] == ["star", "car", "person"]  # unknown labels pass
    assert [p["confidence"] for p in got] == [0.93, 0.75, 0.61]
    assert {k: got[0][k] for k in ("x_min", "y_min", "x_max", "y_max")} == {
        "x_min": 0, "y_min": 0, "x_max": 320, "y_max": 240}  # clamped to 320 x 240
    assert {k: got[2][k] for k in ("x_min", "y_min", "x_max", "y_max")} == {
        "x_min": 10, "y_min": 21, "x_max": 100, "y_max": 60}  # nearest, halves up
    assert all(isinstance(p[k], int) for p in got for k in ("x_min", "y_max"))


def test_the_answer_carries_deepstacks_fields_then_codeproject_ais() -> None:
    body = answer(RESULT, {}, inference_s=0.0214, total_s=0.0256)
    assert body["success"] is True
    assert body["count"] == len(body["predictions"]) == 3
    assert body["message"] == "Found circle, square, star"
    assert (body["inferenceMs"], body["processMs"], body["code"]) == (21, 26, 200)
    assert (body["command"], body["moduleId"]) == ("detect", "kserve-detector")
    empty = answer(ImageResult(detections=(), image_size=(1, 1)), {}, inference_s=0,
                   total_s=0, command="custom")
    assert (empty["predictions"], empty["message"], empty["command"]) == (
        [], "No objects found", "custom")


def test_min_confidence_absent_leaves_the_services_default_and_is_never_below_its_floor() -> None:
    assert score_threshold(None, 0.05) is None
    assert score_threshold(0.0, 0.05) == 0.05
    assert score_threshold(-1.0, 0.05) == 0.05
    assert score_threshold(0.45, 0.05) == 0.45


def test_failures_on_deepstack_paths_keep_that_apis_shape() -> None:
    assert error_body("/v1/vision/detection", 503, "busy") == {
        "success": False, "error": "busy", "code": 503}
    assert error_body("/api/detect", 503, "busy") == {"error": "busy"}
    assert WebMetrics.route_of("/v1/vision/custom/anything") == "/v1/vision/custom"


def test_the_key_comes_in_the_form_or_as_a_bearer_token_and_is_compared_in_constant_time(
) -> None:
    assert "compare_digest" in inspect.getsource(KeyCheck.check)
    KeyCheck(None).check({}, None)  # no key configured: everyone passes
    check = KeyCheck("s3cret")
    check.check({}, "s3cret")
    check.check({"authorization": "Bearer s3cret"}, None)
    for headers, form in (({}, None), ({}, "s3cre"), ({"authorization": "Basic s3cret"}, None)):
        with pytest.raises(ApiError) as caught:
            check.check(headers, form)
        assert caught.value.status == 401
        assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


def test_the_cap_refuses_what_would_pass_it_and_frees_places_given_back() -> None:
    cap = InFlight(3)
    cap.take(2)
    with pytest.raises(ApiError) as caught:
        cap.take(2)
    assert (caught.value.status, caught.value.headers) == (503, {"Retry-After": "1"})
    assert "--max-in-flight" in caught.value.message
    cap.give_back(2)
    cap.take(3)
    assert cap.count == 3


def test_defaults_follow_the_services_own_flags() -> None:
    batching = predictor.config.BatchingConfig()
    model = predictor.config.ModelConfig()
    assert batching.max_queue_size == DEFAULT_MAX_IN_FLIGHT
    assert model.min_score_threshold == DEFAULT_MIN_SCORE_THRESHOLD


def test_the_key_file_may_end_with_a_newline_but_must_hold_a_key(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    assert read_api_key(str(key)) == "s3cret"
    key.write_text("\n")
    with pytest.raises(ConfigError, match="must hold one non-empty line"):
        read_api_key(str(key))
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        read_api_key(str(tmp_path / "absent"))
    settings = WebSettings(client=ClientConfig(), api_key="s3cret")
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match="--protect-page-api needs a key"):
        WebSettings(client=ClientConfig(), protect_page_api=True)


def test_the_label_map_is_a_json_object_of_names(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('{"circle": "person", "square": " car "}')
    assert read_label_map(str(path)) == {"circle": "person", "square": "car"}
    for text in ('["person"]', '{"circle": 1}', "circle=person"):
        path.write_text(text)
        with pytest.raises(ConfigError, match="label map"):
            read_label_map(str(path))
