"""Hostile and malformed requests against the real server: each a 4xx that names the problem.

Every request form (V1 JSON, raw image body, V2 JSON, V2 binary, gRPC) gets broken
payloads, arbitrary JSON in place of its structures (hypothesis), arbitrary bytes as
images, and inputs past each limit. None may answer 5xx, leak a traceback or a server
path, or leave the server unready. One server with small limits serves the whole module.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from PIL import Image

from tests.conftest import Server, start_server
from tests.pngs import png_chunk, png_header_only

pytestmark = pytest.mark.integration

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

# Every distinct hostile request sent, hashed; the module's teardown prints the count.
SENT: set[str] = set()


def _note(kind: str, *parts: Any) -> None:
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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
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
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hostile-logs"), random_model_dir,
                       "--max_body_bytes", str(MAX_BODY),
                       "--max_image_pixels", str(MAX_PIXELS),
                       "--max_images_per_request", str(MAX_IMAGES),
                       "--max_batch_pixels", str(MAX_BATCH_PIXELS),
                       "--max_image_side", str(MAX_SIDE),
                       "--max_batch_size", "4")
    yield srv
    print(f"\n[hostile inputs] distinct hostile requests sent: {len(SENT)}")
    assert srv.stop() == 0, srv.log()[-3000:]


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc_url,
                                    options=[("grpc.max_send_message_length", -1)])
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


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
    _note(url, data)
    return http.post(url, content=data, headers={"content-type": "application/json"})


def post_raw(http: httpx.Client, data: bytes, ctype: str = "image/png") -> httpx.Response:
    _note("raw", ctype, data)
    return http.post(V1, content=data, headers={"content-type": ctype})


def v2_binary(http: httpx.Client, header: dict[str, Any], blob: bytes,
              json_length: int | None = None) -> httpx.Response:
    """A V2 request with the binary tensor extension: JSON header, then raw tensor bytes."""
    head = json.dumps(header).encode()
    _note("v2bin", head, blob, json_length)
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
    _note("grpc", request.SerializeToString())
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


# ---- V1 JSON -----------------------------------------------------------------------
V1_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("body is a list", [1, 2], ("JSON object",)),
    ("body is a string", "instances", ("JSON object",)),
    ("no instances", {"images": []}, ("instances",)),
    ("instances is a string", {"instances": "abc"}, ("instances", "list")),
    ("instances is empty", {"instances": []}, ("empty",)),
    ("instance is a number", {"instances": [7]}, ("instances[0]", "base64")),
    ("b64 is a number", {"instances": [{"b64": 5}]}, ("instances[0]", "base64")),
    ("b64 is not base64", {"instances": [{"b64": "***not base64***"}]}, ("base64",)),
    ("b64 is not ascii", {"instances": [{"b64": "ümlaut"}]}, ("base64",)),
    ("image_bytes has no b64", {"instances": [{"image_bytes": {"data": "x"}}]}, ("b64",)),
    ("unknown instance keys", {"instances": [{"picture": b64(GOOD)}]}, ("no image found",)),
    ("text, not an image", {"instances": [{"b64": b64(b"hello, world")}]}, ("not an image",)),
    ("truncated PNG", {"instances": [{"b64": b64(GOOD[: len(GOOD) // 2])}]},
     ("truncated or corrupt",)),
    ("TIFF", {"instances": [{"b64": b64(picture(fmt="TIFF"))}]}, ("TIFF", "not accepted")),
    ("zero-width PNG", {"instances": [{"b64": b64(png_header_only(0, 10))}]}, ("image",)),
    ("second instance bad", {"instances": [{"b64": b64(GOOD)}, {"b64": b64(b"\0" * 40)}]},
     ("image 1",)),
    ("text-chunk bomb", {"instances": [{"b64": b64(png_text_bomb())}]}, ("image",)),
    ("parameters is a list", {"instances": [{"b64": b64(GOOD)}], "parameters": [1]},
     ("parameters",)),
    ("negative threshold",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"score_threshold": -0.5}},
     ("score_threshold",)),
    ("threshold above 1",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"score_threshold": 7}},
     ("score_threshold",)),
    ("threshold is text",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"score_threshold": "high"}},
     ("score_threshold",)),
    ("negative max_detections",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"max_detections": -1}},
     ("max_detections",)),
    ("fractional max_detections",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"max_detections": 2.5}},
     ("max_detections",)),
    ("unknown class", {"instances": [{"b64": b64(GOOD)}], "parameters": {"classes": ["dog"]}},
     ("dog",)),
    ("class id out of range",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"classes": [99]}}, ("99",)),
    ("classes is an object",
     {"instances": [{"b64": b64(GOOD)}], "parameters": {"classes": {"a": 1}}}, ("classes",)),
]


@pytest.mark.parametrize(("body", "fragments"), [(b, f) for _, b, f in V1_CASES],
                         ids=[c[0] for c in V1_CASES])
def test_v1_bad_json_is_a_400_naming_the_problem(http: httpx.Client, body: Any,
                                                 fragments: tuple[str, ...]) -> None:
    check_error(post_json(http, V1, body), 400, *fragments)


@pytest.mark.parametrize("text", [b"{not json", b"", b'{"instances": [{"b64": "x"}]',
                                  b'{"instances": [], "parameters": {"score_threshold": NaN}}',
                                  b"\xff\xfe\x00garbage"],
                         ids=["broken", "empty", "unterminated", "NaN", "not utf-8"])
def test_unparseable_json_is_a_400(http: httpx.Client, text: bytes) -> None:
    for url in (V1, V2):
        _note(url, text)
        check_error(http.post(url, content=text, headers={"content-type": "application/json"}),
                    400)


def test_paths_and_urls_never_reach_the_filesystem(http: httpx.Client, server: Server) -> None:
    # Nothing in a request names a file the server opens: a path is just bad base64.
    assert server.model_dir is not None
    for body in ({"instances": [{"image_bytes": "/etc/passwd"}]},
                 {"instances": [{"image_bytes": {"uri": "file:///etc/passwd"}}]},
                 {"instances": [{"image": {"b64": "file:///etc/passwd"}}]},
                 {"instances": [{"b64": b64(b"/etc/passwd")}]},
                 {"instances": [{"b64": b64(str(server.model_dir / "config.json").encode())}]}):
        r = post_json(http, V1, body)
        check_error(r, 400)
        assert "root:" not in r.text
        assert "architecture" not in r.text
    r = post_raw(http, b"file:///etc/passwd", "text/uri-list")
    check_error(r, 400)
    assert "root:" not in r.text
    for path in ("/v1/models/..%2F..%2Fetc%2Fpasswd:predict",
                 "/v2/models/..%2F..%2Fetc%2Fpasswd/infer",
                 "/v2/models/detector%2F..%2F..%2Fconfig.json/infer"):
        r = http.post(path, json={"instances": [{"b64": b64(GOOD)}]})
        assert r.status_code in (400, 404), r.text
        assert_clean(r.text)
        assert "root:" not in r.text
    assert_ready(server)


# ---- raw image bodies ---------------------------------------------------------------
RAW_CASES: list[tuple[str, bytes, str, str]] = [
    ("empty body", b"", "image/png", "empty"),
    ("zeros", b"\0" * 500, "image/png", "not an image"),
    ("JPEG magic, then nothing", b"\xff\xd8\xff\xe0" + b"\0" * 20, "image/jpeg", "image"),
    ("truncated JPEG", picture(fmt="JPEG")[:300], "image/jpeg", "image"),
    ("GIF header only", b"GIF89a\x10\x00\x10\x00", "image/gif", "image"),
    ("WebP header only", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp", "image"),
    ("PNG with a bad CRC", GOOD[:29] + b"\0\0\0\0" + GOOD[33:], "image/png", "image"),
    ("text as an image", b"just some text", "image/jpeg", "not an image"),
]


@pytest.mark.parametrize(("data", "ctype", "fragment"), [c[1:] for c in RAW_CASES],
                         ids=[c[0] for c in RAW_CASES])
def test_raw_body_bad_image_is_a_400(http: httpx.Client, data: bytes, ctype: str,
                                     fragment: str) -> None:
    check_error(post_raw(http, data, ctype), 400, fragment)


# ---- V2 JSON and binary -------------------------------------------------------------
def _v2(datatype: str, shape: list[Any], data: Any, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}],
            **extra}


V2_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("no inputs", {}, ("inputs",)),
    ("inputs is a string", {"inputs": "image"}, ("inputs",)),
    ("input is a number", {"inputs": [3]}, ("inputs",)),
    ("FP32 datatype", _v2("FP32", [1, 2, 2, 3], [0.5] * 12), ("FP32", "BYTES", "UINT8")),
    ("unknown datatype", _v2("PIXELS", [1], [b64(GOOD)]), ("PIXELS",)),
    ("shape is text", _v2("BYTES", ["one"], [b64(GOOD)]), ("shape",)),
    ("negative shape", _v2("BYTES", [-1], [b64(GOOD)]), ("negative",)),
    ("shape and data disagree", _v2("BYTES", [3], [b64(GOOD)]), ("shape says 3",)),
    ("BYTES of rank 3", _v2("BYTES", [1, 1, 1], [b64(GOOD)]), ("expected [B]",)),
    ("BYTES data is numbers", _v2("BYTES", [1], [12345]), ("base64",)),
    ("BYTES data is not an image", _v2("BYTES", [1], [b64(b"nope nope")]), ("not an image",)),
    ("data is an object", _v2("BYTES", [1], {"a": 1}), ("data",)),
    ("UINT8 without channels", _v2("UINT8", [1, 2, 2], [0] * 4), ("[B, H, W, 3]",)),
    ("UINT8 too few values", _v2("UINT8", [1, 2, 2, 3], [0] * 5), ("needs 12",)),
    ("UINT8 floats in 0..1", _v2("UINT8", [1, 1, 1, 3], [0.5, 0.1, 0.9]), ("integers",)),
    ("UINT8 above 255", _v2("UINT8", [1, 1, 1, 3], [256, 0, 0]), ("between 0 and 255",)),
    ("UINT8 negative", _v2("UINT8", [1, 1, 1, 3], [-1, 0, 0]), ("between 0 and 255",)),
    ("UINT8 strings", _v2("UINT8", [1, 1, 1, 3], ["a", "b", "c"]), ("integers",)),
    ("UINT8 zero height", _v2("UINT8", [1, 0, 4, 3], []), ("zero size",)),
    ("UINT8 huge shape", _v2("UINT8", [1, 10**9, 10**9, 3], [0]), ("--max_image_pixels",)),
    ("two unnamed inputs", {"inputs": [
        {"name": "a", "shape": [1], "datatype": "BYTES", "data": [b64(GOOD)]},
        {"name": "b", "shape": [1], "datatype": "BYTES", "data": [b64(GOOD)]}]},
     ("one input named 'image'",)),
    ("parameters is a string", _v2("BYTES", [1], [b64(GOOD)], parameters="fast"),
     ("parameters",)),
    ("NaN threshold", _v2("BYTES", [1], [b64(GOOD)],
                          parameters={"score_threshold": float("nan")}), ()),
    ("unknown output", _v2("BYTES", [1], [b64(GOOD)], outputs=[{"name": "masks"}]),
     ("masks",)),
]


@pytest.mark.parametrize(("body", "fragments"), [(b, f) for _, b, f in V2_CASES],
                         ids=[c[0] for c in V2_CASES])
def test_v2_bad_json_is_a_400_naming_the_problem(http: httpx.Client, body: Any,
                                                 fragments: tuple[str, ...]) -> None:
    check_error(post_json(http, V2, body), 400, *fragments)


def test_v2_binary_framing_errors_are_400s(http: httpx.Client, server: Server) -> None:
    blob = prefixed(GOOD)
    head = bytes_input(1, blob)
    check_error(v2_binary(http, head, blob, json_length=10**6), 400, "inference-header")
    check_error(v2_binary(http, head, blob, json_length=0), 400, "inference-header")
    r = http.post(V2, content=json.dumps(head).encode() + blob,
                  headers={"content-type": "application/octet-stream",
                           "inference-header-content-length": "twelve"})
    check_error(r, 400, "must be an integer")
    check_error(v2_binary(http, head, blob + b"extra"), 400, "no input claims")
    check_error(v2_binary(http, head, blob[:-10]), 400, "binary_data_size")
    check_error(v2_binary(http, bytes_input(1, b"\xff\xff\xff\x7fab"), b"\xff\xff\xff\x7fab"),
                400, "declares")
    check_error(v2_binary(http, bytes_input(1, b"\x01\x00"), b"\x01\x00"), 400,
                "length prefix")
    check_error(v2_binary(http, bytes_input(2, blob), blob), 400, "shape says 2")
    bad_size = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                            "parameters": {"binary_data_size": -4}}]}
    check_error(v2_binary(http, bad_size, b""), 400, "binary_data_size")
    no_data = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}
    check_error(v2_binary(http, no_data, b""), 400, "neither data nor binary_data_size")
    uint8 = {"inputs": [{"name": "image", "shape": [1, 4, 4, 3], "datatype": "UINT8",
                         "parameters": {"binary_data_size": 10}}]}
    check_error(v2_binary(http, uint8, b"\0" * 10), 400, "needs 48")
    assert_ready(server)


# ---- gRPC ---------------------------------------------------------------------------
def test_grpc_bad_requests_are_invalid_argument(stub: Any, server: Server) -> None:
    param = pb.InferParameter
    cases: list[tuple[Any, str]] = [
        (grpc_request(raw=[prefixed(b"garbage")]), "not an image"),
        (grpc_request(raw=[b""]), "shape says 1"),
        (grpc_request(raw=[b"\xff\xff\xff\xffab"]), "declares"),
        (grpc_request(shape=(2,), raw=[prefixed(GOOD)]), "shape says 2"),
        (grpc_request(), "shape says 1"),
        (grpc_request("FP32", contents=pb.InferTensorContents(fp32_contents=[1.0])), "FP32"),
        (grpc_request("UINT8", (1, 2, 2, 3), raw=[b"\0" * 5]), "needs 12"),
        (grpc_request("UINT8", (1, 1, 1, 3),
                      contents=pb.InferTensorContents(uint_contents=[1, 2, 999])), "255"),
        (grpc_request("UINT8", (7, 7, 3), raw=[b"\0" * 147]), "[B, H, W, 3]"),
        (grpc_request(shape=(-1,), raw=[prefixed(GOOD)]), "negative"),
        (grpc_request(contents=pb.InferTensorContents(bytes_contents=[b"junk"])),
         "not an image"),
        (grpc_request(raw=[prefixed(GOOD)], params={"score_threshold": param(string_param="x")}),
         "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)],
                      params={"score_threshold": param(string_param="nan")}), "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)], params={"score_threshold": param(int64_param=-5)}),
         "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)], params={"score_threshold": param(bool_param=True)}),
         "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)],
                      params={"max_detections": param(int64_param=-(2**62))}), "max_detections"),
        (grpc_request(raw=[prefixed(GOOD)], params={"classes": param(string_param="cat,dog")}),
         "cat"),
        (pb.ModelInferRequest(model_name="detector"), "one input named 'image'"),
    ]
    for request, fragment in cases:
        err = grpc_error(stub, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (fragment, err.details())
        assert fragment.lower() in (err.details() or "").lower(), (fragment, err.details())
    missing = pb.ModelInferRequest(model_name="no-such-model")
    assert grpc_error(stub, missing).code() == grpc.StatusCode.NOT_FOUND
    assert_ready(server)


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

    _note("chunked", MAX_BODY)
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
    check_error(post_json(http, V2, _v2("BYTES", [len(many)], [b64(x) for x in many])), 400,
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
    check_error(post_json(http, V2, _v2("UINT8", [1, 1001, 1000, 3], [0])), 400,
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


# ---- property-based: arbitrary structures -------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def _hypothesis_error(r: httpx.Response) -> None:
    assert r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    assert_clean(r.text)
    if r.status_code != 200:
        assert r.status_code in (400, 413), r.text
        assert len(r.json()["error"]) > 10


@FUZZ
@given(instances=json_values)
def test_fuzz_v1_instances(http: httpx.Client, instances: Any) -> None:
    r = post_json(http, V1, {"instances": instances})
    _hypothesis_error(r)
    assert r.status_code == 400, r.text


@settings(FUZZ, max_examples=30)
@given(parameters=json_values | st.fixed_dictionaries({}, optional={
    "score_threshold": json_values, "max_detections": json_values, "classes": json_values}))
def test_fuzz_v1_parameters(http: httpx.Client, parameters: Any) -> None:
    r = post_json(http, V1, {"instances": [{"b64": b64(GOOD)}], "parameters": parameters})
    _hypothesis_error(r)  # 200 when the parameters happen to be valid (or ignored)


@FUZZ
@given(inputs=json_values, name=st.sampled_from(["image", "x", ""]),
       datatype=st.sampled_from(["BYTES", "UINT8", "FP32", "INT64", "BOOL", "bytes", ""]),
       shape=st.lists(st.integers(-3, 2**40), max_size=5), data=json_values,
       whole=st.booleans())
def test_fuzz_v2_json(http: httpx.Client, inputs: Any, name: str, datatype: str,
                      shape: list[int], data: Any, whole: bool) -> None:
    if whole:
        body = {"inputs": inputs}
    else:
        body = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    _hypothesis_error(post_json(http, V2, body))  # [1, 1, 1, 3] UINT8 of 3 ints is valid


image_bytes = st.binary(max_size=3000) | st.builds(
    lambda pos, junk: GOOD[:pos] + junk + GOOD[pos + len(junk):],
    st.integers(0, len(GOOD)), st.binary(min_size=1, max_size=16))


@FUZZ
@given(data=image_bytes, route=st.sampled_from(["raw", "v1", "v2json", "v2binary"]))
def test_fuzz_image_bytes_over_rest(http: httpx.Client, data: bytes, route: str) -> None:
    if route == "raw":
        r = post_raw(http, data, "image/png")
    elif route == "v1":
        r = post_json(http, V1, {"instances": [{"image_bytes": {"b64": b64(data)}}]})
    elif route == "v2json":
        r = post_json(http, V2, _v2("BYTES", [1], [b64(data)]))
    else:
        r = v2_binary(http, bytes_input(1, prefixed(data)), prefixed(data))
    _hypothesis_error(r)  # a few flipped bytes may still decode: 200 is fine then


@FUZZ
@given(datatype=st.sampled_from(["BYTES", "UINT8", "FP32", "INT8", "", "BYTES\0"]),
       shape=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
       raw=st.lists(st.binary(max_size=600), max_size=3))
def test_fuzz_grpc_tensors(stub: Any, datatype: str, shape: list[int], raw: list[bytes]) -> None:
    request = grpc_request(datatype, tuple(shape), raw=raw)
    _note("grpc", request.SerializeToString())
    err: grpc.RpcError | None = None
    try:
        stub.ModelInfer(request, timeout=60)
    except grpc.RpcError as exc:
        err = exc
    if err is not None:  # valid by chance (one small image) is fine
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        assert_clean(err.details() or "")
        assert len(err.details() or "") > 10


def test_server_survived_the_fuzzing(http: httpx.Client, server: Server) -> None:
    assert_ready(server)
    r = http.post(V1, json={"instances": [{"b64": b64(GOOD)}]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["image_size"] == [30, 40]
    assert "Traceback" not in r.text
    # Nothing the module sent may have become a 500, even one the client never saw.
    assert '" 500' not in server.log()
