"""The benchmark's plumbing: statistics, output shapes, and a tiny run against the server."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client import loadgen as bench
from client.loadgen import CellResult, Target

REPO = Path(__file__).resolve().parents[3]


# ---- statistics -------------------------------------------------------------------------

def test_percentile_matches_numpy_linear_interpolation() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100):
        values = rng.exponential(10.0, size=n).tolist()
        for q in (0, 50, 95, 99, 100):
            assert bench.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_small_cases_and_bad_input() -> None:
    assert bench.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert bench.percentile([5.0], 99) == 5.0
    assert math.isnan(bench.percentile([], 50))
    with pytest.raises(ValueError, match="between 0 and 100"):
        bench.percentile([1.0], 101)


def test_summarize_rates_latencies_batches_and_detections() -> None:
    server = {"detector_batch_size_sum": 30.0, "detector_batch_size_count": 5.0,
              "detector_inference_seconds_sum": 1.5, "detector_inference_seconds_count": 5.0,
              "detector_queue_wait_seconds_sum": 0.3,
              "detector_queue_wait_seconds_count": 30.0, "process_cpu_seconds_total": 3.0}
    cell = bench.summarize("v2bin", 8, [0.1, 0.2, 0.3, 0.4], 2.0, images_per_request=2,
                           errors={"HTTP 503": 1}, detections=16, server=server)
    assert cell.requests == 4
    assert cell.images == 8
    assert cell.errors == 1
    assert cell.req_per_s == pytest.approx(2.0)
    assert cell.img_per_s == pytest.approx(4.0)
    assert cell.p50_ms == pytest.approx(250.0)
    assert cell.mean_ms == pytest.approx(250.0)
    assert cell.mean_batch_size == pytest.approx(6.0)
    assert cell.model_busy == pytest.approx(0.75)  # 1.5 s of inference in a 2 s window
    assert cell.model_ms == pytest.approx(300.0)  # in 5 model calls
    assert cell.queue_wait_ms == pytest.approx(10.0)
    assert cell.server_cpu == pytest.approx(1.5)
    assert cell.detections_per_image == pytest.approx(2.0)
    assert cell.error_kinds == {"HTTP 503": 1}


def test_summarize_without_successes_has_no_latencies_but_stays_json_ready() -> None:
    cell = bench.summarize("grpc", 1, [], 1.0, errors={"gRPC UNAVAILABLE": 3}, detections=0,
                           server={"detector_batch_size_sum": 0.0,
                                   "detector_batch_size_count": 0.0})
    doc = cell.to_dict()
    assert doc["p50_ms"] is None
    assert doc["mean_batch_size"] is None
    assert doc["errors"] == 3
    assert doc["img_per_s"] == 0.0
    json.dumps(doc, allow_nan=False)


def test_metric_totals_reads_the_server_counters() -> None:
    text = "\n".join([
        "# HELP detector_batch_size Images per batch run by the model",
        "# TYPE detector_batch_size histogram",
        'detector_batch_size_bucket{le="1.0"} 3.0',
        'detector_batch_size_bucket{le="+Inf"} 10.0',
        "detector_batch_size_count 10.0",
        "detector_batch_size_sum 42.0",
        "detector_batch_size_created 1.7e+09",
        "request_preprocess_seconds_sum 1.5",
        'detector_rejected_requests_total{reason="overloaded"} 2.0',
        'process_cpu_seconds_total 12.5',
    ])
    assert bench.metric_totals(text) == {"detector_batch_size_sum": 42.0,
                                         "detector_batch_size_count": 10.0,
                                         "process_cpu_seconds_total": 12.5}
    assert bench.metric_totals(text, ["detector_rejected_requests_total"]) == {
        "detector_rejected_requests_total": 2.0}
    assert bench.metric_totals("request_preprocess_seconds_sum 1.5\n") == {}


# ---- output shapes -------------------------------------------------------------------

def _cell(protocol: str, clients: int, img_per_s: float) -> CellResult:
    return bench.summarize(protocol, clients, [0.05] * 10, 10.0 / img_per_s, detections=20,
                           server={"detector_batch_size_sum": 80.0,
                                   "detector_batch_size_count": 10.0})


def test_format_table_has_a_header_a_rule_and_one_aligned_line_per_row() -> None:
    rows = [_cell("v1", 1, 12.5).to_dict(), {**_cell("grpc", 8, 80.0).to_dict(),
                                             "mean_batch_size": None}]
    lines = bench.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:4] == ["protocol", "clients", "req/s", "img/s"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[:4] == ["v1", "1", "12.5", "12.5"]
    assert lines[3].split()[8] == "-"  # a missing mean batch size shows as a dash
    # Numbers are right-aligned: every row's img/s column ends at the same place.
    end = lines[0].index("img/s") + len("img/s")
    assert all(line[end - 1] != " " for line in lines[2:])


def test_hop_summary_compares_direct_and_web_at_each_client_count() -> None:
    server = {"detector_inference_seconds_sum": 0.3, "detector_inference_seconds_count": 10.0}
    direct = bench.summarize("v2bin", 1, [0.040] * 5, 1.0, server=server)
    # Each round trip less the backend's own call: 4, 6, 7, 9 and 20 ms.
    web = bench.summarize("web", 1, [0.050, 0.052, 0.049, 0.053, 0.060], 1.0, server=server,
                          inner_s=[0.046, 0.046, 0.042, 0.044, 0.040])
    alone = bench.summarize("web", 8, [0.2] * 5, 1.0)
    assert web.hop_ms == pytest.approx(7.0)
    assert direct.hop_ms is None
    (line,) = bench.hop_summary([direct, web, alone])
    assert line == ("extra hop at 1 client(s), POST /api/detect: direct V2 p50 40.0 / p95 "
                    "40.0 ms, through the backend p50 52.0 / p95 58.6 ms; the hop itself "
                    "7.0 ms p50, 18% of a direct call; model call 30.0 ms (mean)")
    deepstack = bench.summarize("deepstack", 1, [0.044] * 5, 1.0, inner_s=[0.042] * 5)
    assert bench.hop_summary([direct, deepstack])[0].startswith(
        "extra hop at 1 client(s), DeepStack route: direct V2 p50 40.0 / p95 40.0 ms, through "
        "the backend p50 44.0 / p95 44.0 ms; the hop itself 2.0 ms p50, 5% of a direct call")
    assert bench.hop_summary([direct]) == []


def test_web_protocol_needs_the_web_url(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        bench.main(["--protocols", "v2bin,web", "--requests", "1"])
    assert info.value.code == 2
    assert "--web-url" in capsys.readouterr().err


def test_report_ratios_and_goals() -> None:
    from bench.report import RawResult, build_rows, format_report, goals

    # Raw at torch's default threads and at one: every ratio divides by the better one.
    raw = [RawResult(1, 5, 1.0, 20.0, 30, 31, 32, 2.0, 2.5, threads=2),
           RawResult(1, 5, 1.0, 16.0, 40, 41, 42, 2.0, 2.5, threads=1, default_threads=False),
           RawResult(8, 5, 1.0, 30.0, 260, 270, 280, 2.0, 2.5, threads=2),
           RawResult(8, 5, 1.0, 40.0, 200, 210, 220, 2.0, 2.5, threads=1,
                     default_threads=False)]
    plain = [_cell("v1", 1, 10.0), _cell("v1", 8, 25.0)]
    ours = [(1, _cell("v2bin", 1, 18.0)), (8, _cell("v2bin", 8, 60.0)),
            (8, _cell("v1", 8, 30.0))]
    rows = build_rows(raw, plain, ours, "2w x 1")
    assert [r["system"] for r in rows] == ["raw"] * 4 + ["plain"] * 2 + ["ours"] * 3
    assert [r["threads"] for r in rows[:4]] == ["2 (default)", "1"] * 2
    assert rows[2]["x_raw"] == pytest.approx(30.0 / 40.0)  # raw rows too, against the best
    headline = rows[7]
    assert headline["x_raw"] == pytest.approx(60.0 / 40.0)  # the 1-thread run is better here
    assert headline["x_plain"] == pytest.approx(60.0 / 25.0)
    assert headline["threads"] == "2w x 1"
    checked = goals(rows, raw)
    assert [g["target"] for g in checked] == [1.3, 1.6, 2.0, 1.0]
    assert [g["met"] for g in checked] == [True, False, True, False]
    assert "(1 threads)" in checked[0]["goal"]
    # 1 client: p50 of 50 ms (the _cell helper) against the faster raw batch-1 call, 30 ms.
    assert checked[3]["ratio"] == pytest.approx(50.0 / 30.0)
    meta = {"architecture": "ssdlite320_mobilenet_v3_large", "weights": "random (seed 0)",
            "device": "cpu", "torch_threads": 2, "images": 16, "image_size": "640x480",
            "image_source": "synthetic", "score_threshold": 0.5, "cpus": 2,
            "detections_per_image": 2.0, "model_detections_per_image": 2.5}
    profiles = [{"protocol": "v2bin", "clients": 8,
                 "stages": {"decode": 3.0, "queue": 20.0, "model": 100.0, "postprocess": 1.0,
                            "transport": 6.0, "model_per_image": 25.0}}]
    text = format_report(meta, rows, checked, profiles)
    assert "weights: random (seed 0)" in text
    assert "1.50 (target >= 1.3) met" in text
    assert "1.50 (target >= 1.6) NOT met" in text
    assert "where a request's time goes" in text
    assert "130.0" in text  # the profile's total
    json.dumps({"rows": rows, "goals": checked}, allow_nan=False)


def test_latency_goal_compares_with_the_faster_raw_batch_1_call() -> None:
    from bench.report import RawResult, build_rows, goals

    raw = [RawResult(1, 5, 1.0, 30.0, 40.0, 41, 42, 2.0, 2.5, threads=2),
           RawResult(1, 5, 1.0, 25.0, 45.0, 46, 47, 2.0, 2.5, threads=1,
                     default_threads=False)]
    fast = bench.summarize("v2bin", 1, [0.035] * 10, 1.0, detections=20, server={})
    slow = bench.summarize("v2bin", 1, [0.042] * 10, 1.0, detections=20, server={})
    (goal,) = goals(build_rows(raw, [], [(1, fast)]), raw)
    assert goal["ratio"] == pytest.approx(35.0 / 40.0)
    assert goal["met"] is True
    assert "2 (default) threads, 40.0 ms" in goal["goal"]
    (goal,) = goals(build_rows(raw, [], [(1, slow)]), raw)
    assert goal["met"] is False


def test_stage_profile_from_two_scrapes() -> None:
    from bench.report import stage_profile

    before = {"request_preprocess_seconds_sum": 1.0, "request_preprocess_seconds_count": 10,
              "request_predict_seconds_sum": 5.0, "request_predict_seconds_count": 10,
              "request_postprocess_seconds_sum": 0.1, "request_postprocess_seconds_count": 10,
              "detector_queue_wait_seconds_sum": 2.0, "detector_queue_wait_seconds_count": 10,
              "detector_inference_seconds_sum": 2.0, "detector_images_total": 10}
    after = {"request_preprocess_seconds_sum": 1.3, "request_preprocess_seconds_count": 110,
             "request_predict_seconds_sum": 15.0, "request_predict_seconds_count": 110,
             "request_postprocess_seconds_sum": 0.2, "request_postprocess_seconds_count": 110,
             "detector_queue_wait_seconds_sum": 4.0, "detector_queue_wait_seconds_count": 110,
             "detector_inference_seconds_sum": 4.5, "detector_images_total": 110}
    stages = stage_profile(before, after, client_mean_ms=110.0)
    assert stages is not None
    assert stages["decode"] == pytest.approx(3.0)
    assert stages["queue"] == pytest.approx(20.0)
    assert stages["model"] == pytest.approx(80.0)  # predict minus the queue
    assert stages["postprocess"] == pytest.approx(1.0)
    assert stages["transport"] == pytest.approx(6.0)
    assert stages["model_per_image"] == pytest.approx(25.0)
    assert stage_profile(before, before, 10.0) is None  # no request in the window


def test_rounds_pair_the_ratios_and_keep_the_median_round() -> None:
    from bench.report import RawResult
    from bench.rounds import Series, median_ratios, replace_by_median

    def raw(ips: float, threads: int) -> RawResult:
        return RawResult(8, 5, 1.0, ips, 10, 11, 12, 2.0, 2.5, threads=threads,
                         default_threads=threads == 2)

    series = Series()
    # Round 2 ran under load: everything slower, and its ratios still count fairly.
    for t2, t1, plain_ips, ours_ips in ((40.0, 30.0, 20.0, 60.0), (10.0, 20.0, 8.0, 30.0),
                                        (38.0, 32.0, 22.0, 57.0)):
        series.add([raw(t2, 2), raw(t1, 1)], _cell("v1", 8, plain_ips),
                   _cell("v2bin", 8, ours_ips))
    ratios = series.ratios()
    assert ratios["x_raw"] == pytest.approx([1.5, 1.5, 1.5])
    assert ratios["x_plain"] == pytest.approx([3.0, 3.75, 57.0 / 22.0])
    assert median_ratios(series) == pytest.approx({"x_raw": 1.5, "x_plain": 3.0})
    raws = [raw(1.0, 2), raw(1.0, 1)]
    plains = [_cell("v1", 1, 5.0), _cell("v1", 8, 1.0)]
    ours = [(8, _cell("v2bin", 8, 1.0)), (8, _cell("grpc", 8, 1.0))]
    replace_by_median(raws, plains, ours, series, batch=8, clients=8, protocol="v2bin")
    assert [r.img_per_s for r in raws] == [38.0, 30.0]
    assert [c.img_per_s for c in plains] == pytest.approx([5.0, 20.0])
    assert [c.img_per_s for _, c in ours] == pytest.approx([57.0, 1.0])
    doc = series.to_dict()
    assert [d["round"] for d in doc] == [1, 2, 3]
    assert doc[1]["raw_img_per_s"] == {"2 (default)": 10.0, "1": 20.0}
    json.dumps(doc, allow_nan=False)


# ---- runs ----------------------------------------------------------------------------

def test_client_bench_imports_neither_torch_nor_kserve_nor_the_predictor() -> None:
    code = ("import sys, client.loadgen as b; b.generated_images(1, (64, 48)); "
            "bad = [m for m in ('torch', 'kserve', 'predictor') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_images_are_jpegs_of_the_requested_size() -> None:
    from io import BytesIO

    from PIL import Image

    images = bench.generated_images(2, (64, 48))
    assert len(images) == 2
    assert images[0] != images[1]
    with Image.open(BytesIO(images[0])) as img:
        assert img.format == "JPEG"
        assert img.size == (64, 48)


def test_run_cell_counts_failures_when_nothing_listens() -> None:
    from tests.support.servers import free_port

    port = free_port()
    target = Target(url=f"http://127.0.0.1:{port}", grpc_target=f"127.0.0.1:{port}",
                    timeout=5)
    images = bench.generated_images(1, (32, 32))
    cell = asyncio.run(bench.run_cell(target, "v2bin", 2, images, duration=None, requests=3,
                                      warmup=0, metrics=False))
    assert cell.requests == 0
    assert cell.errors == 3
    assert cell.error_kinds == {"ConnectError": 3}


def test_cli_bench_against_a_dead_url_exits_unreachable(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from client.cli import main
    from tests.support.servers import free_port

    status = main(["bench", "--url", f"http://127.0.0.1:{free_port()}", "--requests", "1"])
    assert status == 3
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.integration
def test_load_generator_against_the_real_server(served_model, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    picture = tmp_path / "picture.jpg"
    picture.write_bytes(bench.generated_images(1, (160, 120))[0])
    status = bench.main([
        "--url", served_model.http_url, "--grpc-url", served_model.grpc_url,
        "--protocols", "v1,v2bin,grpc", "--clients", "2", "--requests", "5", "--warmup", "0",
        "--images", str(picture), "--score-threshold", "0.05", "--out", str(out),
    ])
    assert status == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    cells = doc["cells"]
    assert [c["protocol"] for c in cells] == ["v1", "v2bin", "grpc"]
    for cell in cells:
        assert cell["requests"] == 5
        assert cell["images"] == 5
        assert cell["errors"] == 0
        assert cell["img_per_s"] > 0
        assert cell["p50_ms"] <= cell["p99_ms"]
        # Every image went through the batcher, in batches of 1 or 2.
        assert 1.0 <= cell["mean_batch_size"] <= 2.0
        assert cell["detections_per_image"] is not None
    # The three protocols send the same picture to the same model: the same detections.
    assert len({round(c["detections_per_image"], 3) for c in cells}) == 1
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("protocol")
    assert len(table) == 5


def test_plain_predictor_answers_in_the_v1_format(random_model_dir: Path) -> None:
    import base64

    from bench.plain import PlainDetector

    model = PlainDetector("detector", str(random_model_dir), device="cpu", score_threshold=0.0)
    assert model.load()
    assert model.ready
    jpeg = bench.generated_images(1, (96, 64))[0]
    out = model.predict({"instances": [{"image_bytes": {"b64": base64.b64encode(jpeg).decode()}}]})
    (prediction,) = out["predictions"]
    assert prediction["image_size"] == [64, 96]
    for det in prediction["detections"]:
        assert set(det) == {"box", "score", "label", "label_id"}
        assert det["label"] == model.labels[det["label_id"]]


def test_raw_loop_measures_each_batch_size(random_model_dir: Path) -> None:
    from bench import raw

    images = bench.generated_images(2, (96, 64))
    (result,) = raw.measure(random_model_dir, images, [2], device="cpu", duration=0.0,
                            min_iterations=1, warmup_calls=0)
    assert result.batch == 2
    assert result.iterations == 1
    assert result.img_per_s == pytest.approx(2 / result.seconds)
    assert 0 <= result.detections_per_image <= result.model_detections_per_image



def test_engines_are_checked_when_the_flags_are_parsed(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    # A typo in --engines used to fail only after the ~8-minute main run.
    from bench import run

    with pytest.raises(SystemExit):
        run.parse_args(["--engines", "eager,torchscript"])
    assert "unknown torchscript; choose from eager" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.parse_args(["--engines", "openvino-int8"])
    assert "--engines openvino-int8 needs --calibration-dir" in capsys.readouterr().err
    assert run.parse_args(["--engines", "none"]).engines == []
    assert run.parse_args([]).engines == ["eager", "openvino-fp32", "openvino"]


def test_the_architectures_bench_refuses_a_typo_before_measuring_anything() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.archs", "--archs", "retinanet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown retinanet" in done.stderr
    assert "retinanet_resnet50_fpn_v2" in done.stderr  # the choices, to fix it


def test_the_start_bench_names_the_image_to_build_when_one_is_missing() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.start", "--torch-image",
                           "no-such-image:0", "--light-image", "no-such-image:1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no image no-such-image:0" in done.stderr
    assert "make image" in done.stderr
