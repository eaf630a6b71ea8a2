"""The CLI against a small fake V1 server: outputs, exit codes and one-line errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from client.cli import main
from tests.support.servers import free_port


class FakeV1(BaseHTTPRequestHandler):
    """Serves model 'detector': one 'circle' per image; 1x1 images are refused (400)."""

    seen_headers: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _model_known(self) -> bool:
        if "/models/detector" in self.path:
            return True
        self._reply(404, {"error": "Model with name other does not exist."})
        return False

    def do_GET(self) -> None:  # noqa: N802
        self.seen_headers.append(dict(self.headers.items()))
        if not self._model_known():
            return
        if self.path.endswith("/ready") or self.path.startswith("/v1/"):
            self._reply(200, {"name": "detector", "ready": True})
        else:
            self._reply(200, {"name": "detector", "versions": [], "platform": "fake",
                              "inputs": [{"name": "image", "datatype": "BYTES",
                                          "shape": [-1]}], "outputs": []})

    def do_POST(self) -> None:  # noqa: N802
        self.seen_headers.append(dict(self.headers.items()))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._model_known():
            return
        predictions = []
        for i, instance in enumerate(body["instances"]):
            image = Image.open(io.BytesIO(base64.b64decode(instance["image_bytes"]["b64"])))
            w, h = image.size
            if (w, h) == (1, 1):
                self._reply(400, {"error": f"instance {i}: image is 1x1 pixels; too small"})
                return
            predictions.append({"image_size": [h, w], "detections": [
                {"box": [1.0, 1.0, w - 1.0, h - 1.0], "score": 0.875, "label": "circle",
                 "label_id": 1}]})
        self._reply(200, {"predictions": predictions})


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeV1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, size in enumerate([(32, 24), (20, 20), (40, 10)]):
        Image.new("RGB", size, (i * 60, 80, 120)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_folder_writes_table_json_csv_and_drawings(
        server_url: str, images: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_csv, drawn = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "drawn"
    code, out, err = run(capsys, "detect", str(images), "--url", server_url,
                         "--protocol", "v1", "--json", str(out_json), "--csv", str(out_csv),
                         "--draw", str(drawn))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["FILE", "LABEL", "SCORE", "X1", "Y1", "X2", "Y2"]
    assert f"{images / 'img2.png'}" in out
    assert "circle  " in out
    assert "0.875" in out
    document = json.loads(out_json.read_text(encoding="utf-8"))
    assert [Path(e["file"]).name for e in document["images"]] == [
        "img0.png", "img1.png", "img2.png"]
    assert document["images"][2]["image_size"] == [10, 40]
    assert document["images"][0]["detections"][0]["box"] == [1.0, 1.0, 31.0, 23.0]
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 3
    assert rows[0]["label"] == "circle"
    assert sorted(p.name for p in drawn.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert Image.open(drawn / "img2.png").size == (40, 10)
    assert "3 image(s), 3 detection(s)" in err


def test_json_to_stdout_replaces_the_table(server_url: str, images: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "detect", str(images / "img0.png"), "--url", server_url,
                       "--protocol", "v1", "--json", "-")
    assert code == 0
    assert json.loads(out)["images"][0]["detections"][0]["label"] == "circle"


def test_host_header_and_token_reach_the_server(
        server_url: str, images: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECT_CLIENT_TOKEN", "from-env")
    FakeV1.seen_headers.clear()
    code, _, err = run(capsys, "detect", str(images / "img1.png"), "--url", server_url,
                       "--protocol", "v1", "--host-header", "detector.default.example.com")
    assert code == 0, err
    assert FakeV1.seen_headers[-1]["Host"] == "detector.default.example.com"
    assert FakeV1.seen_headers[-1]["Authorization"] == "Bearer from-env"


def test_health_and_metadata(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "health", "--url", server_url)
    assert (code, out.strip()) == (0, "live: yes  ready: yes")
    code, out, _ = run(capsys, "metadata", "--url", server_url)
    assert code == 0
    assert json.loads(out)["inputs"][0]["name"] == "image"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["health", "--model", "other"], 4, "no such model"),
        (["detect", "{images}/missing.png"], 5, "missing.png: no such file or folder"),
        (["detect", "{images}/notes.txt"], 5, "notes.txt: not an image file"),
        (["detect", "{images}/tiny.png"], 5, "instance 0: image is 1x1 pixels; too small"),
        (["detect", "{images}/*.jpg"], 5, "no files match"),
        (["health", "--url", "ftp://nowhere"], 2, "not an HTTP URL"),
        (["detect", "{images}/img0.png", "--json", "/nonexistent/dir/r.json"], 2,
         "--json /nonexistent/dir/r.json: its folder does not exist"),
    ],
)
def test_failures_give_one_line_and_the_documented_exit_code(
        server_url: str, images: Path, capsys: pytest.CaptureFixture[str],
        argv: list[str], code: int, message: str) -> None:
    Image.new("RGB", (1, 1)).save(images / "tiny.png")
    args = [a.replace("{images}", str(images)) for a in argv]
    if "--url" not in args:
        args += ["--url", server_url]
    got, _, err = run(capsys, *args, "--protocol", "v1", "--retries", "0")
    assert got == code
    assert err.startswith("detect-client: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, _, err = run(capsys, "health", "--url", f"http://127.0.0.1:{port}", "--retries", "0")
    assert code == 3
    assert err.startswith(f"detect-client: error: cannot connect to http://127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["detect", "x.png", "--timeout", "-1"])
    assert info.value.code == 2
    assert "must be a number above 0" in capsys.readouterr().err


def test_evaluate_hands_a_detect_function_to_client_evaluate(
        server_url: str, images: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    class Report:
        def format(self) -> str:
            return "mAP@0.5: 0.123"

        def to_dict(self) -> dict[str, float]:
            return {"map50": 0.123}

    def fake_run(detect_fn: Any, images_dir: str, annotations: str, progress: bool,
                 recall_threshold: float, view: int) -> Report:
        paths = sorted(Path(images_dir).glob("*.png"))
        calls.append((detect_fn(paths), annotations, progress, recall_threshold, view))
        return Report()

    monkeypatch.setitem(sys.modules, "client.evaluate",
                        types.SimpleNamespace(run=fake_run, require_pycocotools=lambda: None))
    report = tmp_path / "report.json"
    code, out, _ = run(capsys, "evaluate", str(images), "ann.json", "--url", server_url,
                       "--protocol", "v1", "--json", str(report), "--no-progress")
    assert code == 0
    assert out.strip() == "mAP@0.5: 0.123"
    assert json.loads(report.read_text(encoding="utf-8")) == {"map50": 0.123}
    per_image, annotations, progress, recall_threshold, view = calls[0]
    assert (annotations, progress) == ("ann.json", False)
    assert (recall_threshold, view) == (0.5, 320)  # the server's default score, SSDlite's view
    assert len(per_image) == 3
    box, score, label_id = per_image[0][0]
    assert (tuple(box), score, label_id) == ((1.0, 1.0, 31.0, 23.0), 0.875, 1)


def test_evaluate_refuses_a_recall_threshold_below_the_scores_it_fetches(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "imgs", "ann.json", "--score-threshold", "0.6")
    assert code == 2
    assert "--recall-threshold 0.5 is below --score-threshold 0.6" in err


def test_evaluate_without_pycocotools_says_how_to_install_it_before_any_request(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    code, _, err = run(capsys, "evaluate", "imgs", "ann.json", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert "pip install 'kserve-detector[eval]'" in err


def test_bench_gets_its_arguments_untouched(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def bench_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setitem(sys.modules, "client.loadgen", types.SimpleNamespace(main=bench_main))
    assert run(capsys, "bench", "--url", "http://x:1", "--concurrency", "4")[0] == 0
    assert seen == [["--url", "http://x:1", "--concurrency", "4"]]
