"""Inputs past each limit: body size, images, pixels, decompression bombs; refused cheaply."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.support.hostile import (
    GOOD,
    MAX_BODY,
    MAX_IMAGES,
    MAX_SIDE,
    V1,
    V2,
    assert_ready,
    b64,
    bytes_input,
    check_error,
    grpc_error,
    grpc_request,
    note,
    picture,
    png_zero_bomb,
    post_json,
    post_raw,
    prefixed,
    rss_mb,
    v2_binary,
    v2_body,
)
from tests.support.pngs import png_header_only
from tests.support.servers import Server

pytestmark = pytest.mark.integration



# ---- limits -------------------------------------------------------------------------
def test_body_size_limit_rest_413_and_grpc_resource_exhausted(http: httpx.Client, stub: Any,
                                                              server: Server) -> None:
    big = b"\0" * (MAX_BODY + 1000)
    check_error(post_raw(http, big), 413, "--max_body_bytes")
    check_error(post_json(http, V1, {"instances": [{"b64": b64(big)}]}), 413, "--max_body_bytes")
    check_error(v2_binary(http, bytes_input(1, prefixed(big)), prefixed(big)), 413,
                "--max_body_bytes")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        for _ in range(30):
            yield b"\0" * 100_000

    note("chunked", MAX_BODY)
    r = http.post(V1, content=chunks(), headers={"content-type": "image/png"})
    check_error(r, 413, "--max_body_bytes")
    err = grpc_error(stub, grpc_request(raw=[prefixed(big)]))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (err.details() or "")
    assert_ready(server)


def test_images_per_request_limit(http: httpx.Client, stub: Any, server: Server) -> None:
    many = [GOOD] * (MAX_IMAGES + 1)
    flag = "--max_images_per_request"
    check_error(post_json(http, V1, {"instances": [{"b64": b64(x)} for x in many]}), 400, flag)
    check_error(post_json(http, V2, v2_body("BYTES", [len(many)], [b64(x) for x in many])), 400,
                flag)
    blob = prefixed(*many)
    check_error(v2_binary(http, bytes_input(len(many), blob), blob), 400, flag)
    err = grpc_error(stub, grpc_request(shape=(len(many),), raw=[blob]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert flag in (err.details() or "")
    assert_ready(server)


def test_pixel_limits_are_checked_from_the_header(http: httpx.Client, stub: Any,
                                                  server: Server) -> None:
    # Header-only files: a server that decoded first would answer "truncated" instead.
    over = png_header_only(1200, 1000)
    check_error(post_raw(http, over), 400, "1200x1000", "--max_image_pixels")
    check_error(post_json(http, V1, {"instances": [{"b64": b64(over)}]}), 400,
                "--max_image_pixels")
    err = grpc_error(stub, grpc_request(raw=[prefixed(over)]))
    assert "--max_image_pixels" in (err.details() or "")
    check_error(post_raw(http, png_header_only(MAX_SIDE + 1, 8)), 400, "--max_image_side")
    check_error(post_json(http, V2, v2_body("UINT8", [1, 1001, 1000, 3], [0])), 400,
                "--max_image_pixels")
    assert_ready(server)


def test_decompression_bombs_are_refused_without_memory_growth(http: httpx.Client, stub: Any,
                                                               server: Server) -> None:
    declared = png_header_only(50_000, 50_000)  # 7.5 GB of RGB declared in 100 bytes
    real = png_zero_bomb(10_000, 10_000)  # 100 MB of pixels in about 100 kB
    assert len(declared) < 200
    assert len(real) < 200_000
    flag = "--max_image_pixels"
    check_error(post_raw(http, real), 400, flag)  # first one: lazy allocations settle
    before = rss_mb(server.proc.pid)
    for _ in range(7):
        check_error(post_raw(http, real), 400, "10000x10000", flag)
        check_error(post_json(http, V1, {"instances": [{"b64": b64(declared)}]}), 400,
                    "50000x50000", "2500.0 megapixels", flag)
    for bomb in (declared, real) * 3:
        err = grpc_error(stub, grpc_request(raw=[prefixed(bomb)]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert flag in (err.details() or "")
    growth = rss_mb(server.proc.pid) - before
    print(f"\n[bombs] 20 bombs refused; server RSS growth {growth:.1f} MB")
    assert growth < 8, f"the server grew by {growth:.0f} MB refusing bombs"
    assert_ready(server)


def test_decoded_pixels_per_request_limit(http: httpx.Client, server: Server) -> None:
    # Each image is under --max_image_pixels; together they pass --max_batch_pixels.
    images = [picture((1000, 900), colour=(i * 40, 20, 20)) for i in range(3)]
    check_error(post_json(http, V1, {"instances": [{"b64": b64(x)} for x in images]}), 400,
                "--max_batch_pixels")
    ok = post_json(http, V1, {"instances": [{"b64": b64(x)} for x in images[:2]]})
    assert ok.status_code == 200, ok.text
    assert [p["image_size"] for p in ok.json()["predictions"]] == [[900, 1000]] * 2
    assert_ready(server)


def _too_large_count(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith('detector_rejected_requests_total{reason="too_large"}'):
            return float(line.split()[-1])
    return 0.0


def test_oversized_request_headers_get_431_naming_the_limit(http: httpx.Client,
                                                            server: Server) -> None:
    # 1 MiB and 8 MiB of headers used to be read whole and answered 200.
    before = _too_large_count(http)
    rss = rss_mb(server.proc.pid)
    for size in (40_000, 1 << 20, 8 << 20):
        r = http.post(V1, content=GOOD, headers={"content-type": "image/png",
                                                 "x-padding": "a" * size})
        check_error(r, 431, "--max_header_bytes", "32768")
    many = {f"x-h{i}": "b" * 100 for i in range(400)}  # 40 kB across many lines
    check_error(http.get("/v2/health/live", headers=many), 431, "--max_header_bytes")
    check_error(http.get("/v2/models/detector?" + "q=" * 20_000), 431, "--max_header_bytes")
    assert _too_large_count(http) - before == 5
    growth = rss_mb(server.proc.pid) - rss
    assert growth < 16, f"the server grew by {growth:.0f} MB reading oversized headers"
    # Headers a real client sends (a long bearer token, cookies) still pass.
    ok = http.post(V1, content=GOOD, headers={"content-type": "image/png",
                                              "authorization": "Bearer " + "t" * 8000})
    assert ok.status_code == 200, ok.text
    assert_ready(server)
