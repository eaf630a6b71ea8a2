"""COCO mAP (pycocotools) on hand-made cases whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.evaluate import evaluate_detections, run

SQUARE = [10.0, 10.0, 110.0, 110.0]
OTHER = [200.0, 200.0, 260.0, 260.0]


def test_perfect_predictions_score_one():
    truth = [[(SQUARE, 1), (OTHER, 2)], [(OTHER, 1)]]
    preds = [[(SQUARE, 0.9, 1), (OTHER, 0.8, 2)], [(OTHER, 0.7, 1)]]
    report = evaluate_detections(truth, preds, {1: "circle", 2: "square"})
    assert report.map50 == pytest.approx(1.0)
    assert report.map == pytest.approx(1.0)
    assert [c.name for c in report.classes] == ["circle", "square"]
    assert all(c.recall50 == 1.0 for c in report.classes)


def test_one_missed_box_halves_recall():
    truth = [[(SQUARE, 1)], [(OTHER, 1)]]
    preds = [[(SQUARE, 0.9, 1)], []]
    report = evaluate_detections(truth, preds)
    # Precision 1 up to recall 0.5: 51 of the 101 recall points.
    assert report.map50 == pytest.approx(51 / 101)
    assert report.classes[0].recall50 == 0.5


def test_false_positive_ranked_above_true_positive_costs_half():
    truth = [[(SQUARE, 1)]]
    preds = [[(OTHER, 0.9, 1), (SQUARE, 0.8, 1)]]
    assert evaluate_detections(truth, preds).map50 == pytest.approx(0.5)


def test_false_positive_ranked_below_costs_nothing():
    truth = [[(SQUARE, 1)]]
    preds = [[(SQUARE, 0.9, 1), (OTHER, 0.1, 1)]]
    assert evaluate_detections(truth, preds).map50 == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive():
    truth = [[(SQUARE, 1), (OTHER, 1)]]
    # The duplicate outranks the second true box: precision 2/3 at recall 1.
    preds = [[(SQUARE, 0.9, 1), (SQUARE, 0.8, 1), (OTHER, 0.7, 1)]]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert evaluate_detections(truth, preds).map50 == pytest.approx(expected)


@pytest.mark.parametrize(("height", "ap50"), [(49.0, 0.0), (50.0, 1.0), (51.0, 1.0)])
def test_iou_threshold_is_inclusive(height, ap50):
    truth = [[([0.0, 0.0, 100.0, 100.0], 1)]]
    preds = [[([0.0, 0.0, 100.0, height], 0.9, 1)]]
    report = evaluate_detections(truth, preds)
    assert report.map50 == pytest.approx(ap50)
    # Only the 0.5 threshold can match at IoU ~0.5: one tenth of the 0.5:0.95 average.
    assert report.map == pytest.approx(ap50 / 10)


def test_map_averages_over_iou_thresholds():
    truth = [[([0.0, 0.0, 100.0, 100.0], 1)]]
    preds = [[([0.0, 0.0, 100.0, 93.0], 0.9, 1)]]  # IoU 0.93: matches 0.50 .. 0.90
    report = evaluate_detections(truth, preds)
    assert report.map50 == pytest.approx(1.0)
    assert report.map == pytest.approx(0.9)


def test_wrong_class_counts_as_miss_and_unknown_class_is_reported():
    truth = [[(SQUARE, 1)]]
    preds = [[(SQUARE, 0.9, 3)]]
    report = evaluate_detections(truth, preds)
    assert report.map50 == 0.0
    assert report.ignored_labels == (3,)
    assert [c.label_id for c in report.classes] == [1]


def test_mean_skips_classes_without_ground_truth():
    truth = [[(SQUARE, 1)], [(OTHER, 2)]]
    preds = [[(SQUARE, 0.9, 1)], []]
    report = evaluate_detections(truth, preds)
    assert report.map50 == pytest.approx(0.5)  # (1.0 + 0.0) / 2


def test_only_top_max_detections_per_image_and_class_count():
    truth = [[(SQUARE, 1)]]
    junk = [([500.0 + i, 500.0, 520.0 + i, 520.0], 0.9, 1) for i in range(3)]
    preds = [[*junk, (SQUARE, 0.1, 1)]]
    assert evaluate_detections(truth, preds, max_detections=3).map50 == 0.0
    assert evaluate_detections(truth, preds, max_detections=4).map50 == pytest.approx(0.25)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="pair up"):
        evaluate_detections([[(SQUARE, 1)]], [])


def test_no_predictions_at_all_scores_zero_not_an_error():
    report = evaluate_detections([[(SQUARE, 1)], [(OTHER, 2)]], [[], []])
    assert report.map50 == 0.0
    assert [c.num_detections for c in report.classes] == [0, 0]


def test_run_reads_coco_and_calls_detect_fn_in_batches(tmp_path: Path):
    coco = {
        "images": [
            {"id": i, "file_name": f"{i:06d}.png", "width": 320, "height": 320} for i in range(5)
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i,
                "category_id": 1 + i % 2,
                "bbox": [10.0 + i, 20.0, 30.0, 40.0],
                "area": 1200.0,
                "iscrowd": 0,
            }
            for i in range(5)
        ],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
    }
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps(coco))
    calls: list[list[Path]] = []

    def detect(paths: list[Path]):
        calls.append(paths)
        out = []
        for p in paths:
            i = int(p.stem)
            out.append([([10.0 + i, 20.0, 40.0 + i, 60.0], 0.9, 1 + i % 2)])
        return out

    report = run(detect, tmp_path / "images", ann, progress=False, batch_size=2)
    assert [len(c) for c in calls] == [2, 2, 1]
    assert calls[0][0] == tmp_path / "images" / "000000.png"
    assert report.map50 == pytest.approx(1.0)
    assert report.map == pytest.approx(1.0)
    table = report.format()
    assert "circle" in table
    assert "square" in table
    assert "5 images" in table
    assert json.loads(json.dumps(report.to_dict()))["map50"] == pytest.approx(1.0)


def test_run_rejects_detect_fn_returning_wrong_count(tmp_path: Path):
    ann = tmp_path / "annotations.json"
    ann.write_text(
        json.dumps(
            {"images": [{"id": 0, "file_name": "a.png"}], "annotations": [], "categories": []}
        )
    )
    with pytest.raises(ValueError, match="returned 0 results for 1 images"):
        run(lambda paths: [], tmp_path, ann, progress=False)
