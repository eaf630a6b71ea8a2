"""COCO mAP (pycocotools) and recall by size band on hand-made cases whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client._bands import AREA_EDGES, SIDE_EDGES, band_index, match_image, side_in_view
from client.evaluate import evaluate_detections, recall_by_size, run

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


# Recall by size band, at the score a user sees (client/_bands.py through client.evaluate).

SMALL = [0.0, 0.0, 40.0, 20.0]  # larger side 40 px in a 320 x 320 picture, area 800
MEDIUM = [100.0, 100.0, 160.0, 150.0]  # 60 px, area 3000
LARGE = [200.0, 0.0, 300.0, 100.0]  # 100 px, area 10000
SIZE_320 = (320.0, 320.0)


@pytest.mark.parametrize(("box", "size", "side"), [
    (SMALL, (320.0, 320.0), 40.0),
    (SMALL, (640.0, 160.0), 40.0),  # halved across to 20, doubled down to 40
    (SMALL, (160.0, 640.0), 80.0),  # doubled across to 80, halved down to 10
])
def test_side_is_measured_after_the_resize_to_the_view(box, size, side):
    assert side_in_view(box, *size, view=320) == pytest.approx(side)


@pytest.mark.parametrize(("side", "band"), [
    (28.0, 0), (47.9, 0), (48.0, 1), (79.9, 1), (80.0, 2), (400.0, 2)])
def test_side_band_edges_go_up(side, band):
    assert band_index(side, SIDE_EDGES) == band


@pytest.mark.parametrize(("area", "band"), [
    (31.0**2, 0), (32.0**2, 1), (95.0**2, 1), (96.0**2, 2)])
def test_area_bands_are_cocos(area, band):
    assert band_index(area, AREA_EDGES) == band


def test_recall_counts_only_detections_at_the_threshold():
    truth = [[(SMALL, 1), (MEDIUM, 2), (LARGE, 1)]]
    preds = [[(SMALL, 0.3, 1), (MEDIUM, 0.6, 2), (LARGE, 0.9, 1)]]
    at_half = recall_by_size(truth, preds, [SIZE_320], score_threshold=0.5)
    assert [(b.found, b.total) for b in at_half.bands if b.scale == "side"] == [
        (0, 1), (1, 1), (1, 1)]
    assert at_half.band("side", "small").recall == 0.0
    assert at_half.false_detections == 0  # the low-scoring one is not shown, so not false
    at_quarter = recall_by_size(truth, preds, [SIZE_320], score_threshold=0.25)
    assert at_quarter.band("side", "small").recall == 1.0


def test_coco_area_bands_count_in_the_pictures_own_pixels():
    # In a 640 px picture the LARGE box is 50 px in the view, but its area stays 100².
    truth = [[(SMALL, 1), (LARGE, 1)]]
    preds = [[(LARGE, 0.9, 1)]]
    report = recall_by_size(truth, preds, [(640.0, 640.0)])
    assert [(b.name, b.found, b.total) for b in report.bands if b.scale == "area"] == [
        ("small", 0, 1), ("medium", 0, 0), ("large", 1, 1)]
    assert [(b.name, b.total) for b in report.bands if b.scale == "side"] == [
        ("small", 1), ("medium", 1), ("large", 0)]


def test_wrong_class_duplicate_and_stray_boxes_are_false_detections():
    truth = [[(MEDIUM, 1)], [(LARGE, 2)]]
    preds = [[(MEDIUM, 0.9, 1), (MEDIUM, 0.8, 1), (OTHER, 0.7, 1)],  # a duplicate, a stray
             [(LARGE, 0.95, 1)]]  # right place, wrong class
    report = recall_by_size(truth, preds, [SIZE_320, SIZE_320])
    assert report.false_detections == 3
    assert report.false_per_image == pytest.approx(1.5)
    assert report.band("side", "medium").recall == 1.0
    assert report.band("side", "large").recall == 0.0


def test_a_detection_matches_the_box_it_overlaps_most():
    near = [0.0, 0.0, 40.0, 40.0]
    far = [20.0, 0.0, 60.0, 40.0]
    truth = [[(far, 1), (near, 1)]]
    preds = [[([2.0, 0.0, 42.0, 40.0], 0.9, 1)]]  # IoU 0.9 with near, 0.47 with far
    hits, false = match_image(truth[0], preds[0], 0.5)
    assert (hits, false) == ([False, True], 0)


@pytest.mark.parametrize(("height", "found"), [(49.0, 0), (50.0, 1)])
def test_iou_half_matches_as_in_coco(height, found):
    truth = [[([0.0, 0.0, 100.0, 100.0], 1)]]
    preds = [[([0.0, 0.0, 100.0, height], 0.9, 1)]]
    report = recall_by_size(truth, preds, [SIZE_320])
    assert report.band("side", "large").found == found


def test_empty_band_is_shown_as_a_dash_and_null():
    report = recall_by_size([[(LARGE, 1)]], [[(LARGE, 0.9, 1)]], [SIZE_320])
    small = report.band("side", "small")
    assert small.total == 0
    assert small.recall != small.recall  # NaN
    row = next(line for line in report.format().splitlines()
               if line.startswith("side in 320 px view") and " small " in line)
    assert row.rstrip().endswith("-")
    assert json.loads(json.dumps(report.to_dict()))["bands"][0]["recall"] is None


def test_sizes_must_pair_up_and_be_positive():
    with pytest.raises(ValueError, match="pair up"):
        recall_by_size([[(SMALL, 1)]], [[]], [])
    with pytest.raises(ValueError, match="not positive"):
        recall_by_size([[(SMALL, 1)]], [[]], [(0.0, 320.0)])


def test_report_with_sizes_prints_and_serialises_the_bands():
    truth = [[(SMALL, 1), (LARGE, 1)]]
    preds = [[(SMALL, 0.4, 1), (LARGE, 0.9, 1)]]
    report = evaluate_detections(truth, preds, sizes=[SIZE_320])
    assert report.map50 == pytest.approx(1.0)  # mAP counts every score
    assert report.sizes is not None
    assert report.sizes.band("side", "small").recall == 0.0  # recall only 0.5 and up
    table = report.format()
    assert "recall at score >= 0.5, IoU 0.5" in table
    assert "0/1" in table
    assert "false detections: 0 (0.000 per image)" in table
    data = json.loads(json.dumps(report.to_dict()))
    assert data["recall_by_size"]["bands"][0] == {
        "scale": "side", "name": "small", "limits": "<48 px", "found": 0, "total": 1,
        "recall": 0.0}
    assert evaluate_detections(truth, preds).sizes is None


def test_run_takes_sizes_from_the_images_when_the_annotations_lack_them(tmp_path: Path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (640, 160)).save(images / "a.png")
    # 30 x 30 in 640 x 160 is 15 x 60 in the 320 px view: medium by side, small by area.
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({
        "images": [{"id": 0, "file_name": "a.png"}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [0, 0, 30, 30],
                         "area": 900, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "circle"}]}))
    found = [0.0, 0.0, 30.0, 30.0]
    report = run(lambda paths: [[(found, 0.9, 1)]], images, ann, progress=False)
    assert report.sizes is not None
    assert report.sizes.band("side", "medium").found == 1
    assert report.sizes.band("area", "small").found == 1
    low = run(lambda paths: [[(found, 0.9, 1)]], images, ann, progress=False,
              recall_threshold=0.95)
    assert low.sizes is not None
    assert low.sizes.band("side", "medium").found == 0
