"""protocol.b64: base64 as clients send it, and refusals that name the input."""

from __future__ import annotations

import base64

import pytest

from predictor.protocol import RequestError
from predictor.protocol.b64 import b64decode

# ---- base64 ------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 3 + b"\xfb\xff"  # has bytes that encode to + / and - _


def test_b64_standard():
    assert b64decode(base64.b64encode(PAYLOAD).decode(), "x") == PAYLOAD
    assert b64decode(base64.b64encode(PAYLOAD), "x") == PAYLOAD


def test_b64_url_safe_and_missing_padding():
    text = base64.urlsafe_b64encode(PAYLOAD).decode()
    assert "-" in text or "_" in text
    assert b64decode(text, "x") == PAYLOAD
    assert b64decode(text.rstrip("="), "x") == PAYLOAD
    assert b64decode(base64.b64encode(b"ab").decode().rstrip("="), "x") == b"ab"


def test_b64_line_wrapped_as_the_base64_tool_writes_it():
    text = base64.encodebytes(PAYLOAD).decode()
    assert "\n" in text.strip()
    assert b64decode(text, "x") == PAYLOAD


@pytest.mark.parametrize("bad", ["abc$def", "a", "ab=c", "====", "wrong!", "ÿÿÿÿ"])
def test_b64_invalid_names_the_instance(bad):
    with pytest.raises(RequestError, match=r"^instances\[4\]: .*base64"):
        b64decode(bad, "instances[4]")
