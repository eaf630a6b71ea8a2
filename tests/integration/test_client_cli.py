"""``detect-client`` against the real server: folder mode, ingress headers, failures.

The CLI runs as a subprocess, as a user runs it, so exit codes and stderr are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.support.servers import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INGRESS_HOST = "detector.default.example.com"
TOKEN = "test-token-123"


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DETECT_CLIENT_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "client", *argv], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty small pictures with a few shapes each."""
    out = tmp_path_factory.mktemp("pictures")
    for i in range(20):
        img = Image.new("RGB", (160 + 4 * i, 120), (200, 210 - 5 * i, 190))
        draw = ImageDraw.Draw(img)
        draw.ellipse((10 + i, 10, 70 + i, 70), fill=(220, 40, 40))
        draw.rectangle((90, 40, 140, 100), fill=(40, 40, 200))
        img.save(out / f"pic{i:02d}.{'png' if i % 2 else 'jpg'}")
    return out


def test_folder_mode_writes_one_picture_per_image_and_one_json(
        served_model: Any, folder: Path, tmp_path: Path) -> None:
    drawn, report = tmp_path / "drawn", tmp_path / "results.json"
    done = cli("detect", str(folder), "--url", served_model.http_url, "--model",
               served_model.model_name, "--score-threshold", "0.05", "--draw", str(drawn),
               "--json", str(report), "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in drawn.iterdir()) == [f"pic{i:02d}.png" for i in range(20)]
    assert Image.open(drawn / "pic19.png").size == (160 + 4 * 19, 120)
    document = json.loads(report.read_text(encoding="utf-8"))
    assert len(document["images"]) == 20
    assert document["images"][0]["image_size"] == [120, 160]
    assert sorted(tmp_path.iterdir()) == [drawn, report]  # one JSON, nothing else
    assert "20 image(s)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--model", "no-such-model"], 4, "no such model"),
        (["{folder}/missing.png"], 5, "missing.png: no such file or folder"),
        (["{unreadable}"], 5, "not an image file"),
    ],
)
def test_failures_print_one_line_and_exit_with_the_documented_code(
        served_model: Any, folder: Path, tmp_path: Path, argv: list[str], code: int,
        message: str) -> None:
    unreadable = tmp_path / "broken.jpg"
    unreadable.write_bytes(b"\xff\xd8 this is not really a JPEG")
    args = [a.replace("{folder}", str(folder)).replace("{unreadable}", str(unreadable))
            for a in argv]
    if not any(a.endswith((".png", ".jpg")) for a in args):
        args.append(str(folder / "pic00.jpg"))
    done = cli("detect", *args, "--url", served_model.http_url, "--retries", "0",
               *(["--model", served_model.model_name] if "--model" not in args else []))
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("detect-client: error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_unreachable_port_exits_3(folder: Path, protocol: str) -> None:
    port = free_port()
    done = cli("detect", str(folder / "pic00.jpg"), "--url", f"http://127.0.0.1:{port}",
               "--grpc-url", f"127.0.0.1:{port}", "--protocol", protocol, "--retries", "1")
    assert done.returncode == 3, done.stderr
    assert f"cannot connect to {'http://' if protocol == 'v2' else ''}127.0.0.1:{port}" \
        in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


class Ingress(BaseHTTPRequestHandler):
    """Routes by Host and checks a bearer token, like an ingress in front of KServe."""

    upstream = ""
    seen: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        self.seen.append(dict(self.headers.items()))
        if self.headers.get("Host") != INGRESS_HOST:
            self._answer(404, b"", {})  # no route for that host, as Istio answers
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, b'{"error": "missing or wrong token"}', {})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "authorization", "content-length")}
        reply = httpx.request(self.command, self.upstream + self.path, content=body,
                              headers=headers, timeout=120)
        self._answer(reply.status_code, reply.content, dict(reply.headers))

    do_GET = _forward  # noqa: N815
    do_POST = _forward  # noqa: N815


@pytest.fixture(scope="module")
def ingress(served_model: Any) -> Iterator[str]:
    Ingress.upstream = served_model.http_url
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_host_header_and_token_reach_the_server_through_an_ingress(
        served_model: Any, ingress: str, folder: Path, protocol: str) -> None:
    Ingress.seen.clear()
    done = cli("detect", str(folder / "pic01.png"), "--url", ingress, "--protocol", protocol,
               "--model", served_model.model_name, "--host-header", INGRESS_HOST,
               "--token", TOKEN, "--json", "-")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"][0]["image_size"] == [120, 164]
    assert Ingress.seen[-1]["Host"] == INGRESS_HOST
    assert Ingress.seen[-1]["Authorization"] == f"Bearer {TOKEN}"


def test_ingress_refusals_map_to_exit_codes(served_model: Any, ingress: str,
                                            folder: Path) -> None:
    picture = str(folder / "pic01.png")
    base = ["detect", picture, "--url", ingress, "--model", served_model.model_name]
    no_host = cli(*base, "--token", TOKEN)
    assert no_host.returncode == 4, no_host.stderr
    no_token = cli(*base, "--host-header", INGRESS_HOST)
    assert no_token.returncode == 7, no_token.stderr
    assert "check --token" in no_token.stderr
