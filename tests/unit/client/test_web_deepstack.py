"""The DeepStack API's pure parts: how a result becomes ``predictions``, the key, the cap,
the files the flags name. The routes against the real service are in
tests/integration/test_web_deepstack.py."""

from __future__ import annotations

import email.utils
import inspect
import uuid
from pathlib import Path

import pytest

import predictor.config
from client import ClientConfig, ConfigError, Detection, ImageResult
from client.web import WebSettings
from client.web.deepstack import Answering, answer, predictions, score_threshold
from client.web.errors import ApiError, error_body
from client.web.guard import InFlight, KeyCheck
from client.web.metrics import WebMetrics
from client.web.settings import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MIN_SCORE_THRESHOLD,
    read_api_key,
    read_label_map,
)
from client.web.uploads import read_fraction


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


def answering(label_map: dict[str, str] | None = None, max_predictions: int = 20
              ) -> Answering:
    return Answering(model="detector", label_map=label_map or {},
                     max_predictions=max_predictions, inference_device="GPU",
                     processed_by="node-7", min_score_threshold=0.05)


def test_the_answer_carries_deepstacks_fields_then_codeproject_ais() -> None:
    body = answer(RESULT, answering(), inference_s=0.0214, total_s=0.0256)
    assert body["success"] is True
    assert body["count"] == len(body["predictions"]) == 3
    assert body["message"] == "Found circle, square, star"
    assert (body["inferenceMs"], body["processMs"], body["code"]) == (21, 26, 200)
    assert (body["command"], body["moduleId"]) == ("detect", "kserve-detector")
    empty = answer(ImageResult(detections=(), image_size=(1, 1)), answering(), inference_s=0,
                   total_s=0, command="custom")
    assert (empty["predictions"], empty["message"], empty["command"]) == (
        [], "No objects found", "custom")


def test_a_codeproject_ai_dashboard_gets_every_field_its_server_adds_with_its_type() -> None:
    body = answer(RESULT, answering(), inference_s=0.0214, total_s=0.0256)
    assert body["duration"] == pytest.approx(0.0256)  # DeepStack: float seconds
    assert isinstance(body["duration"], float)
    assert body["analysisRoundTripMs"] == 21  # the round trip to the inference service
    assert isinstance(body["analysisRoundTripMs"], int)
    assert (body["moduleName"], body["inferenceDevice"], body["processedBy"]) == (
        "KServe detector", "GPU", "node-7")
    assert uuid.UUID(body["requestId"])  # a GUID, a new one per answer
    assert body["requestId"] != answer(RESULT, answering(), inference_s=0,
                                       total_s=0)["requestId"]
    assert body["timestampUTC"].endswith(" GMT")  # RFC 1123, .NET's "R"
    assert email.utils.parsedate_to_datetime(body["timestampUTC"]).tzinfo is not None


def test_frigate_never_gets_more_predictions_than_the_cap_and_keeps_the_best() -> None:
    many = ImageResult(detections=tuple(det((1, 1, 9, 9), (i + 1) / 30, "circle")
                                        for i in range(25)), image_size=(10, 10))
    body = answer(many, answering(), inference_s=0, total_s=0)
    assert body["count"] == len(body["predictions"]) == 20
    assert [p["confidence"] for p in body["predictions"]] == [(i + 1) / 30
                                                              for i in range(24, 4, -1)]
    assert len(predictions(many, {}, 3)) == 3
    assert len(predictions(many, {})) == 25


def test_without_min_confidence_detections_go_down_to_0_4_and_never_below_0_1() -> None:
    assert score_threshold(None, 0.05) == 0.4  # DeepStack's and CodeProject.AI's default
    assert score_threshold(0.0, 0.05) == 0.1  # DeepStack's floor
    assert score_threshold(0.05, 0.05) == 0.1
    assert score_threshold(0.45, 0.05) == 0.45
    assert score_threshold(0.0, 0.2) == 0.2  # the service's own minimum, when higher


@pytest.mark.parametrize("name", ["min_confidence", "score_threshold"])
def test_both_apis_refuse_a_confidence_outside_0_to_1_naming_the_field(name: str) -> None:
    assert read_fraction(name, None) is None
    assert (read_fraction(name, "0"), read_fraction(name, "1"), read_fraction(name, "-0")) == (
        0.0, 1.0, 0.0)
    assert read_fraction(name, "0.35") == 0.35
    for text in ("-0.1", "1.01", "nan", "inf", "high", ""):
        with pytest.raises(ApiError) as caught:
            read_fraction(name, text)
        assert caught.value.status == 400
        assert caught.value.message == f"{name} must be a number from 0 to 1, got {text!r}"


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


def test_the_prediction_cap_is_20_by_default_and_at_least_1() -> None:
    assert WebSettings(client=ClientConfig()).max_predictions == 20
    with pytest.raises(ConfigError, match="--max-predictions must be at least 1"):
        WebSettings(client=ClientConfig(), max_predictions=0)


def test_the_label_map_is_a_json_object_of_names(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('{"circle": "person", "square": " car "}')
    assert read_label_map(str(path)) == {"circle": "person", "square": "car"}
    for text in ('["person"]', '{"circle": 1}', "circle=person"):
        path.write_text(text)
        with pytest.raises(ConfigError, match="label map"):
            read_label_map(str(path))
