"""Load, overload and deadlines against the real server.

- 64 concurrent clients, valid and invalid requests mixed: every valid request gets its
  own answer (its image's size, the same detections as a reference call), every invalid
  one a 400, no 5xx, and the server's memory stays within a stated bound.
- A flood against a deliberately small queue: the excess is refused at once with 503 +
  Retry-After (gRPC UNAVAILABLE), the admitted requests are answered, and the server is
  ready afterwards.
- A deadline shorter than any inference: 504 (gRPC DEADLINE_EXCEEDED) naming the flag.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from PIL import Image, ImageDraw

from tests.support.servers import Server, start_server

pytestmark = pytest.mark.integration

V1 = "/v1/models/detector:predict"
THRESHOLD = 0.05
CLIENTS = 64
VALID = 64
INVALID = 336
RSS_BOUND_MB = 300


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """Samples a process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def distinct_picture(i: int) -> bytes:
    """Picture ``i``: its own size and colours, so its answer cannot pass for another's."""
    width, height = 160 + 3 * i, 120 + 2 * i
    img = Image.new("RGB", (width, height), (20 + 4 * i, 180, 90))
    draw = ImageDraw.Draw(img)
    draw.ellipse((10 + i, 10, 60 + i, 60), fill=(220, 20, 20))
    draw.rectangle((width - 70, height - 60, width - 20, height - 10), fill=(20, 20, 220))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1_body(images: list[bytes]) -> dict[str, Any]:
    return {"instances": [{"b64": b64(x)} for x in images],
            "parameters": {"score_threshold": THRESHOLD}}


def invalid_body(i: int) -> tuple[str, dict[str, Any]]:
    """Invalid request ``i``, one of several kinds; each is a 400."""
    kinds: list[Callable[[], dict[str, Any]]] = [
        lambda: {"instances": [{"b64": "@@not base64@@"}]},
        lambda: {"instances": [{"b64": b64(b"not an image %d" % i)}]},
        lambda: {"instances": []},
        lambda: {"instances": [{"b64": b64(distinct_picture(0))}],
                 "parameters": {"score_threshold": -i}},
        lambda: {"instances": [{"b64": b64(distinct_picture(0))}],
                 "parameters": {"classes": [f"no-such-class-{i}"]}},
        lambda: {"instances": [{"b64": b64(distinct_picture(0)[:200])}]},
    ]
    return V1, kinds[i % len(kinds)]()


def detections_match(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert got["image_size"] == want["image_size"], where
    a, b = got["detections"], want["detections"]
    assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} detections"
    assert [d["label_id"] for d in a] == [d["label_id"] for d in b], where
    np.testing.assert_allclose([d["box"] for d in a], [d["box"] for d in b], atol=0.05,
                               err_msg=where)
    np.testing.assert_allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-4,
                               err_msg=where)


@pytest.mark.slow
def test_mixed_load_from_64_clients(served_model: Server) -> None:
    pictures = [distinct_picture(i) for i in range(VALID)]
    with httpx.Client(base_url=served_model.http_url, timeout=120) as client:
        reference: list[dict[str, Any]] = []
        for start in range(0, VALID, 16):  # the reference: one call per image, in few requests
            r = client.post(V1, json=v1_body(pictures[start:start + 16]))
            assert r.status_code == 200, r.text
            reference += r.json()["predictions"]
    assert all(p["detections"] for p in reference), "no detections to compare"

    jobs: list[tuple[str, int]] = [("valid", i) for i in range(VALID)]
    jobs += [("invalid", i) for i in range(INVALID)]
    random.Random(7).shuffle(jobs)
    results: dict[tuple[str, int], list[httpx.Response]] = {job: [] for job in jobs}
    failures: list[str] = []

    def send(client: httpx.Client, job: tuple[str, int]) -> None:
        kind, i = job
        try:
            if kind == "valid":
                r = client.post(V1, json=v1_body([pictures[i]]))
            else:
                url, body = invalid_body(i)
                r = client.post(url, json=body)
        except httpx.HTTPError as exc:
            failures.append(f"{job}: {exc!r}")
            return
        results[job].append(r)

    before = rss_mb(served_model.proc.pid)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    with httpx.Client(base_url=served_model.http_url, timeout=120, limits=limits) as client, \
            PeakRss(served_model.proc.pid) as rss, ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda job: send(client, job), jobs))
    elapsed = time.monotonic() - started
    after = rss_mb(served_model.proc.pid)

    assert not failures, failures[:5]
    statuses = [r.status_code for rs in results.values() for r in rs]
    five_xx = sum(s >= 500 for s in statuses)
    print(f"\n[load] {len(jobs)} requests ({VALID} valid, {INVALID} invalid) from {CLIENTS} "
          f"clients in {elapsed:.1f} s; 5xx: {five_xx}; server RSS {before:.0f} MB -> "
          f"peak {rss.peak:.0f} MB, after {after:.0f} MB (growth {rss.peak - before:.0f} MB)")
    assert five_xx == 0
    for job, responses in results.items():
        assert len(responses) == 1, f"{job}: {len(responses)} answers"
        r = responses[0]
        if job[0] == "invalid":
            assert r.status_code == 400, f"{job}: {r.status_code} {r.text[:300]}"
            assert r.json()["error"]
        else:
            assert r.status_code == 200, f"{job}: {r.status_code} {r.text[:300]}"
            (pred,) = r.json()["predictions"]
            detections_match(pred, reference[job[1]], f"valid request {job[1]}")
    assert rss.peak - before < RSS_BOUND_MB


# ---- a small queue ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tight_servers(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path
                  ) -> Iterator[dict[str, Server]]:
    """A server with a two-image queue, and one whose deadline no inference can meet.

    Started side by side: each start is mostly waiting on imports and the warm-up.
    """
    logs = tmp_path_factory.mktemp("overload-logs")
    flags = {"small_queue": ("--max_queue_size", "2", "--max_batch_size", "1"),
             "deadline": ("--request_timeout_ms", "1")}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(start_server, logs, random_model_dir, *extra)
                   for name, extra in flags.items()}
        servers = {name: f.result() for name, f in futures.items()}
    yield servers
    with ThreadPoolExecutor(2) as pool:
        codes = dict(zip(servers, pool.map(Server.stop, servers.values()), strict=True))
    assert codes == {name: 0 for name in servers}, codes


def grpc_infer_request(image: bytes) -> Any:
    req = pb.ModelInferRequest(model_name="detector")
    tensor = req.inputs.add()
    tensor.name, tensor.datatype = "image", "BYTES"
    tensor.shape.append(1)
    req.raw_input_contents.append(struct.pack("<I", len(image)) + image)
    return req


@pytest.mark.slow  # starts two servers of its own
def test_flood_on_a_small_queue_gets_503_with_retry_after(tight_servers: dict[str, Server]
                                                          ) -> None:
    server = tight_servers["small_queue"]
    pictures = [distinct_picture(i) for i in range(48)]
    before = rss_mb(server.proc.pid)
    rest: list[tuple[int, httpx.Response | Exception]] = []
    grpc_codes: list[grpc.StatusCode] = []
    grpc_details: list[str] = []
    channel = grpc.insecure_channel(server.grpc_url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    start = threading.Barrier(len(pictures) + 24)

    def rest_call(client: httpx.Client, i: int) -> None:
        start.wait()
        try:
            rest.append((i, client.post(V1, json=v1_body([pictures[i]]))))
        except httpx.HTTPError as exc:
            rest.append((i, exc))

    def grpc_call(i: int) -> None:
        start.wait()
        try:
            stub.ModelInfer(grpc_infer_request(pictures[i]), timeout=60)
            grpc_codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            grpc_codes.append(err.code())
            grpc_details.append(err.details() or "")

    started = time.monotonic()
    limits = httpx.Limits(max_connections=64)
    with httpx.Client(base_url=server.http_url, timeout=60, limits=limits) as client, \
            PeakRss(server.proc.pid) as rss, ThreadPoolExecutor(len(pictures) + 24) as pool:
        for i in range(len(pictures)):
            pool.submit(rest_call, client, i)
        for i in range(24):
            pool.submit(grpc_call, i)
    elapsed = time.monotonic() - started
    channel.close()

    errors = [r for _, r in rest if isinstance(r, Exception)]
    assert not errors, errors[:3]  # refused at once, never left hanging
    responses = [r for _, r in rest if isinstance(r, httpx.Response)]
    codes = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    print(f"\n[flood] {len(responses)} REST requests: {codes.count(200)} x 200, "
          f"{len(refused)} x 503; gRPC: {grpc_codes.count(grpc.StatusCode.OK)} OK, "
          f"{grpc_codes.count(grpc.StatusCode.UNAVAILABLE)} UNAVAILABLE; {elapsed:.1f} s; "
          f"RSS growth {rss.peak - before:.0f} MB")
    assert set(codes) <= {200, 503}, codes
    assert refused, "a flood of 48 against a 2-image queue refused nothing"
    assert codes.count(200) >= 1
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        assert "--max_queue_size" in r.json()["error"]
    for i, answer in rest:  # each admitted request got its own picture's answer
        if isinstance(answer, httpx.Response) and answer.status_code == 200:
            assert answer.json()["predictions"][0]["image_size"] == [120 + 2 * i, 160 + 3 * i]
    assert set(grpc_codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, grpc_codes
    assert grpc.StatusCode.UNAVAILABLE in grpc_codes
    assert all("--max_queue_size" in d for d in grpc_details)
    assert rss.peak - before < RSS_BOUND_MB
    # Refusals leave nothing behind: the server is ready and answers normally.
    assert httpx.get(f"{server.http_url}/v2/models/detector/ready", timeout=10).status_code == 200
    r = httpx.post(f"{server.http_url}{V1}", json=v1_body([pictures[5]]), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["image_size"] == [130, 175]


@pytest.mark.slow  # starts two servers of its own
def test_deadline_gives_504_naming_the_flag(tight_servers: dict[str, Server]) -> None:
    server = tight_servers["deadline"]
    picture = distinct_picture(1)
    r = httpx.post(f"{server.http_url}{V1}", json=v1_body([picture]), timeout=60)
    assert r.status_code == 504, r.text
    assert "--request_timeout_ms" in r.json()["error"]
    assert "Traceback" not in r.text
    channel = grpc.insecure_channel(server.grpc_url)
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_infer_request(picture),
                                                             timeout=60)
    channel.close()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--request_timeout_ms" in (info.value.details() or "")
    # A timed-out request is not a broken server.
    assert httpx.get(f"{server.http_url}/v2/models/detector/ready", timeout=10).status_code == 200
