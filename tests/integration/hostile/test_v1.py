"""Hostile V1 requests (JSON and raw image bodies): each a 400 that names the problem."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.hostile import (
    GOOD,
    V1,
    V2,
    assert_clean,
    assert_ready,
    b64,
    check_error,
    note,
    picture,
    png_text_bomb,
    post_json,
    post_raw,
)
from tests.support.pngs import png_header_only
from tests.support.servers import Server

pytestmark = pytest.mark.integration



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
        note(url, text)
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
