"""Weights round trip: save a model here, serve it, get the same answers; bad folders
stop the server at start with one readable line."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.support.servers import REPO, save_random_model, start_server

pytestmark = pytest.mark.integration


def _picture() -> str:
    img = Image.new("RGB", (300, 200), (240, 240, 200))
    ImageDraw.Draw(img).polygon([(50, 150), (120, 30), (190, 150)], fill=(20, 120, 20))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _detect(server: Any) -> list[dict[str, Any]]:
    r = httpx.post(f"{server.http_url}/v1/models/{server.model_name}:predict",
                   json={"instances": [{"b64": _picture()}],
                         "parameters": {"score_threshold": 0.05}}, timeout=60)
    assert r.status_code == 200, r.text
    dets: list[dict[str, Any]] = r.json()["predictions"][0]["detections"]
    return dets


def test_state_dict_safetensors_and_torchscript_give_the_same_answers(
        tmp_path: Path) -> None:
    import torch
    import torchvision
    from safetensors.torch import load_file

    st = save_random_model(tmp_path / "st", seed=3)
    pt = save_random_model(tmp_path / "pt", seed=3, fmt="pt")
    ts = tmp_path / "ts"
    ts.mkdir()
    model = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None,
                                         weights_backbone=None, num_classes=5,
                                         score_thresh=0.05, detections_per_img=100)
    model.load_state_dict(load_file(str(st / "model.safetensors")))
    torch.jit.script(model.eval()).save(str(ts / "model.pt"))
    (ts / "labels.txt").write_text((st / "labels.txt").read_text(encoding="utf-8"))

    answers = []
    for folder, extra in ((st, ()), (pt, ()), (ts, ("--allow_torchscript",))):
        server = start_server(tmp_path, folder, *extra)
        try:
            answers.append(_detect(server))
        finally:
            assert server.stop() == 0, server.log()[-2000:]
    assert answers[0], "random weights gave no detection above 0.05; pick another seed"
    assert answers[0] == answers[1]
    assert [d["label"] for d in answers[2]] == [d["label"] for d in answers[0]]
    for a, b in zip(answers[0], answers[2], strict=True):
        assert a["box"] == pytest.approx(b["box"], abs=0.05)
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def _start_fails(model_dir: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "predictor", "--model_dir", str(model_dir), "--http_port", "0",
         "--grpc_port", "0", *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_bad_model_folders_fail_at_start_with_a_clear_message(tmp_path: Path) -> None:
    folder = save_random_model(tmp_path / "wrong-classes")
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg["num_classes"] = 7
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "labels.txt").unlink()
    msg = _start_fails(folder)
    assert "model.safetensors" in msg
    assert "7 classes" in msg

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.pt").write_bytes(b"not a checkpoint")
    (garbage / "config.json").write_text(json.dumps(
        {"architecture": "ssdlite320_mobilenet_v3_large", "num_classes": 5}))
    msg = _start_fails(garbage)
    assert "model.pt" in msg
    assert "state_dict" in msg

    msg = _start_fails(tmp_path / "does-not-exist", "--architecture", "fcos_resnet50_fpn")
    assert "does-not-exist" in msg


def test_an_empty_or_missing_model_folder_stops_the_server_naming_it(tmp_path: Path) -> None:
    # A wrong storageUri or PVC path leaves /mnt/models empty: the pod must not go Ready
    # serving the demo detector.
    (tmp_path / "empty").mkdir()
    msg = _start_fails(tmp_path / "empty")
    assert f"--model_dir {tmp_path / 'empty'} is empty" in msg
    assert "--demo_if_empty" in msg
    msg = _start_fails(tmp_path / "never-mounted")
    assert f"--model_dir {tmp_path / 'never-mounted'} is missing" in msg


def test_the_demo_is_served_for_an_empty_folder_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    server = start_server(tmp_path, tmp_path / "empty", "--demo_if_empty")
    try:
        labels = httpx.get(f"{server.http_url}/v2/models/detector", timeout=10)
        assert labels.status_code == 200
        assert any("serving the embedded demo detector" in line and "--demo_if_empty" in line
                   for line in server.log().splitlines())
        assert {d["label"] for d in _detect(server)} <= {"circle", "square", "triangle", "star"}
    finally:
        assert server.stop() == 0
