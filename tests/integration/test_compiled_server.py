"""A compiled model folder served without torch: every protocol answers like the torch path.

The real server on 127.0.0.1 serves the demo detector compiled by ``python -m
predictor.export`` (fp32, so the answers can be held to eager torch's: same labels, boxes
within 1 px, scores within 0.01); the process never loads torch, which ``/proc`` shows;
and in a virtual environment where torch is not even installed it serves all the same.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import launch
from client import DetectionClient
from demo.synthetic import write_dataset
from predictor import export
from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline.engine import Engine
from tests.support.servers import Server, start_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHOWN = 0.3  # the score threshold the requests ask for


@pytest.fixture(scope="module")
def compiled_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled") / "demo"
    export.export(DEMO_MODEL_DIR, out, precision="fp32")
    return out


@pytest.fixture(scope="module")
def server(compiled_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = start_server(tmp_path_factory.mktemp("logs"), compiled_demo)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Unseen demo pictures as PNG (no draft decoding: the same pixels reach both paths)."""
    folder = tmp_path_factory.mktemp("pictures")
    write_dataset(folder, count=6, seed=4_711, mixed_fraction=0.5, progress=False)
    out = []
    for i, path in enumerate(sorted((folder / "images").iterdir())):
        image = Image.open(path).convert("RGB").resize([(640, 480), (480, 640), (800, 450)][i % 3])
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _torch(pictures: list[bytes]) -> list[list[tuple[int, float, np.ndarray]]]:
    engine = Engine(ModelConfig(model_dir=str(DEMO_MODEL_DIR), device="cpu", cpu_accel=False))
    engine.load()
    raw = engine.run([np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in pictures])
    return [[(int(lab), float(s), b) for b, s, lab in zip(r.boxes, r.scores, r.labels,
                                                          strict=True) if s >= SHOWN]
            for r in raw]


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc"])
def test_every_protocol_answers_like_the_torch_path(
        server: Server, pictures: list[bytes], protocol: str) -> None:
    want = _torch(pictures)
    with DetectionClient(server.http_url, protocol=protocol,  # type: ignore[arg-type]
                         grpc_url=server.grpc_url) as client:
        got = client.detect(pictures, score_threshold=SHOWN)
    compared = 0
    for i, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        found = [(d.label_id, d.score, np.array(d.box)) for d in mine.detections]
        # A detection right at the threshold may fall on either side of it.
        sure = [t for t in theirs if t[1] >= SHOWN + 0.01]
        assert len(sure) <= len(found) <= len(theirs) + sum(
            1 for f in found if f[1] < SHOWN + 0.01), (i, found, theirs)
        for label, score, box in sure:
            twins = [f for f in found if f[0] == label and abs(f[1] - score) <= 0.01]
            assert twins, (i, label, score)
            assert min(np.abs(f[2] - box).max() for f in twins) <= 1.0, (i, label, box)
            compared += 1
    assert compared >= 10


def test_options_limits_and_errors_behave_as_on_the_torch_path(
        server: Server, pictures: list[bytes]) -> None:
    url = f"{server.http_url}/v1/models/detector:predict"
    b64 = base64.b64encode(pictures[0]).decode()

    def ask(**parameters: object) -> list[dict[str, object]]:
        answer = httpx.post(url, timeout=30, json={"instances": [{"b64": b64}],
                                                   "parameters": parameters})
        assert answer.status_code == 200, answer.text
        detections: list[dict[str, object]] = answer.json()["predictions"][0]["detections"]
        return detections

    everything = ask(score_threshold=0.2)
    assert len(everything) >= 2
    assert ask(score_threshold=0.2, max_detections=1) == everything[:1]
    label = everything[-1]["label"]
    assert {d["label"] for d in ask(score_threshold=0.2, classes=[label])} == {label}
    bad = httpx.post(url, content=b"not a picture", headers={"content-type": "image/png"},
                     timeout=30)
    assert bad.status_code == 400
    assert "Traceback" not in bad.text
    too_low = httpx.post(url, timeout=30, json={"instances": [{"b64": b64}],
                                                "parameters": {"score_threshold": 7}})
    assert too_low.status_code == 400
    assert "score_threshold" in too_low.text
    assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=10).status_code == 200


def test_the_server_never_loads_torch(server: Server, pictures: list[bytes]) -> None:
    for protocol in ("v1", "v2", "grpc"):
        with DetectionClient(server.http_url, protocol=protocol,  # type: ignore[arg-type]
                             grpc_url=server.grpc_url) as client:
            client.detect(pictures[:2])
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text(encoding="utf-8")
    assert "libtorch" not in maps
    assert "torchvision" not in maps
    meta = httpx.get(f"{server.http_url}/v2/models/detector", timeout=10).json()
    assert meta["platform"] == "openvino-fp32"


@pytest.mark.slow
def test_it_serves_from_a_virtual_environment_without_torch(
        compiled_demo: Path, tmp_path: Path, pictures: list[bytes]) -> None:
    env_dir = tmp_path / "venv"
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    except Exception as exc:  # no ensurepip, read-only disk...
        pytest.skip(f"cannot create a virtualenv here ({exc})")
    python = env_dir / "bin" / "python"
    source = tmp_path / "src"
    shutil.copytree(REPO / "predictor", source / "predictor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "demo"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt"):
        shutil.copy(REPO / name, source / name)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "-c", str(source / "constraints.txt")]
    done = subprocess.run([*pip, f"{source}[runtime]"], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        pytest.skip(f"pip could not install the runtime: {done.stderr[-500:]}")
    check = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch'), u.find_spec('torchvision'))"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert check.stdout.split() == ["None", "None"]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    http, grpc = launch.free_port(), launch.free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([str(python), "-m", "predictor", "--model_dir", str(compiled_demo),
                             "--http_port", str(http), "--grpc_port", str(grpc)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        launch.wait_ready(proc, f"http://127.0.0.1:{http}/v2/models/detector/ready", 120,
                          "predictor",
                          lambda: (tmp_path / "server.log").read_text(encoding="utf-8")[-3000:])
        with DetectionClient(f"http://127.0.0.1:{http}", grpc_url=f"127.0.0.1:{grpc}",
                             protocol="grpc") as client:
            result = client.detect_one(pictures[0], score_threshold=SHOWN)
        assert result.detections
    finally:
        launch.stop(proc)
        log.close()
