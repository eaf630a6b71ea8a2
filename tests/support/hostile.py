"""Hostile-input helpers: small limits, broken payloads, bombs, and checks that nothing leaks.

Shared by the tests/integration/hostile/ modules, which all talk to one server
started with these limits (the ``server`` fixture in its conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, settings
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from PIL import Image

from tests.support.pngs import png_chunk
from tests.support.servers import Server

MAX_BODY = 2_000_000
MAX_PIXELS = 1_000_000
MAX_IMAGES = 8
MAX_BATCH_PIXELS = 2_500_000
# Raised so a 50,000 x 50,000 bomb meets the megapixel limit rather than the side limit.
MAX_SIDE = 65_000
# What a response must never show: a traceback, or where the server's code lives.
LEAKS = ("Traceback", "/work", "site-packages", '.py"', 'File "', "/tmp/")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)

# Every distinct hostile request sent, hashed; the server fixture's teardown prints the count.
SENT: set[str] = set()


def note(kind: str, *parts: Any) -> None:
    digest = hashlib.sha1(kind.encode())
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    SENT.add(digest.hexdigest())


# ---- images -----------------------------------------------------------------------
def picture(size: tuple[int, int] = (40, 30), fmt: str = "PNG",
            colour: tuple[int, int, int] = (10, 200, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def png_zero_bomb(width: int, height: int) -> bytes:
    """A real grayscale PNG of ``width`` x ``height`` black pixels: tiny, until decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte, then the row
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def png_text_bomb() -> bytes:
    """A 30x20 PNG with a zTXt chunk that inflates to 16 MB of text."""
    good = picture((30, 20))
    text = b"comment\0\0" + zlib.compress(b"A" * 16_000_000, 9)
    return good[:33] + png_chunk(b"zTXt", text) + good[33:]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = picture()


# ---- the server and the calls ------------------------------------------------------
V1 = "/v1/models/detector:predict"
V2 = "/v2/models/detector/infer"


def assert_clean(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"response leaks {leak!r}: {text[:500]}"


def check_error(r: httpx.Response, status: int | tuple[int, ...], *fragments: str) -> str:
    """The response has the expected 4xx, a JSON error message with ``fragments``, no leak."""
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, f"{r.status_code}: {r.text[:500]}"
    assert_clean(r.text)
    message = r.json()["error"]
    assert isinstance(message, str)
    assert len(message) > 10
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    return message


def post_json(http: httpx.Client, url: str, body: Any) -> httpx.Response:
    """Posts ``body`` as JSON text; NaN and Infinity go out as Python writes them."""
    data = json.dumps(body).encode()
    note(url, data)
    return http.post(url, content=data, headers={"content-type": "application/json"})


def post_raw(http: httpx.Client, data: bytes, ctype: str = "image/png") -> httpx.Response:
    note("raw", ctype, data)
    return http.post(V1, content=data, headers={"content-type": ctype})


def v2_binary(http: httpx.Client, header: dict[str, Any], blob: bytes,
              json_length: int | None = None) -> httpx.Response:
    """A V2 request with the binary tensor extension: JSON header, then raw tensor bytes."""
    head = json.dumps(header).encode()
    note("v2bin", head, blob, json_length)
    length = str(len(head) if json_length is None else json_length)
    return http.post(V2, content=head + blob,
                     headers={"content-type": "application/octet-stream",
                              "inference-header-content-length": length})


def prefixed(*elements: bytes) -> bytes:
    """A BYTES tensor: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def bytes_input(count: int, blob: bytes) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(blob)}}]}


def grpc_request(datatype: str = "BYTES", shape: tuple[int, ...] = (1,),
                 raw: list[bytes] | None = None, params: dict[str, Any] | None = None,
                 contents: Any = None, name: str = "image") -> Any:
    req = pb.ModelInferRequest(model_name="detector")
    tensor = req.inputs.add()
    tensor.name, tensor.datatype = name, datatype
    tensor.shape.extend(shape)
    if contents is not None:
        tensor.contents.CopyFrom(contents)
    if raw is not None:
        req.raw_input_contents.extend(raw)
    for key, value in (params or {}).items():
        req.parameters[key].CopyFrom(value)
    return req


def grpc_error(stub: Any, request: Any) -> grpc.RpcError:
    note("grpc", request.SerializeToString())
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=60)
    err = info.value
    assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err.details()
    assert_clean(err.details() or "")
    return err


def assert_ready(server: Server) -> None:
    assert server.proc.poll() is None, server.log()[-3000:]
    assert httpx.get(f"{server.http_url}/v2/models/detector/ready", timeout=10).status_code == 200
    assert httpx.get(f"{server.http_url}/v2/health/live", timeout=10).status_code == 200


def v2_body(datatype: str, shape: list[Any], data: Any, **extra: Any) -> dict[str, Any]:
    """A V2 JSON request whose one input is ``image`` with this datatype, shape and data."""
    return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}],
            **extra}
