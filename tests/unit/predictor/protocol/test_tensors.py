"""protocol.v1 / protocol.v2: every accepted request form to image sources, and every refusal."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from predictor.protocol import RequestError, Tensor
from predictor.protocol.v1 import parse_v1
from predictor.protocol.v2 import image_input, image_sources, split_bytes_tensor

FILE_A = b"\xff\xd8\xff\xe0 not utf-8 \x80\x81\xfe"  # stands in for an encoded image
FILE_B = b"\x89PNG\r\n\x1a\n\x00\x00 second file"
B64_A = base64.b64encode(FILE_A).decode()
B64_B = base64.b64encode(FILE_B).decode()
MAX_IMAGES = 4
MAX_PIXELS = 1_000_000


def prefixed(*elements: bytes) -> bytes:
    """A V2 binary BYTES tensor: each element is a 4-byte LE length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def v2(datatype: str, shape: list[int], data: object = None, raw: bytes | None = None,
       max_images: int = MAX_IMAGES, max_pixels: int = MAX_PIXELS) -> list:
    return image_sources(Tensor("image", datatype, tuple(shape), data, raw), max_images, max_pixels)


# ---- V1 ----------------------------------------------------------------------------

@pytest.mark.parametrize("instance", [
    {"image_bytes": {"b64": B64_A}},
    {"image": {"b64": B64_A}},
    {"image": B64_A},
    {"b64": B64_A},
])
def test_v1_instance_forms_give_the_file_bytes(instance):
    parsed = parse_v1({"instances": [instance]}, MAX_IMAGES)
    assert parsed.sources == [FILE_A]
    assert dict(parsed.parameters) == {}


def test_v1_keeps_order_and_parameters():
    body = {"instances": [{"b64": B64_A}, {"image_bytes": {"b64": B64_B}}],
            "parameters": {"score_threshold": 0.7, "classes": ["circle"]}}
    parsed = parse_v1(body, MAX_IMAGES)
    assert parsed.sources == [FILE_A, FILE_B]
    assert parsed.parameters == {"score_threshold": 0.7, "classes": ["circle"]}


def test_v1_inputs_alias():
    assert parse_v1({"inputs": [{"b64": B64_B}]}, MAX_IMAGES).sources == [FILE_B]


def test_v1_raw_body_is_one_image():
    assert parse_v1(FILE_A, MAX_IMAGES).sources == [FILE_A]
    assert parse_v1(bytearray(FILE_B), MAX_IMAGES).sources == [FILE_B]


@pytest.mark.parametrize(("body", "message"), [
    ([{"b64": B64_A}], "must be a JSON object with \"instances\", got list"),
    ("text", "must be a JSON object"),
    ({"parameters": {}}, 'no "instances" list'),
    ({"instances": {"b64": B64_A}}, '"instances" must be a list, got dict'),
    ({"instances": []}, '"instances" is empty'),
    ({"instances": [{"b64": B64_A}] * 5},
     r'"instances" has 5 images; the limit is 4 per request \(--max_images_per_request\)'),
    ({"instances": [{"b64": B64_A}, {"picture": B64_B}]},
     r"instances\[1\]: no image found \(keys: picture\)"),
    ({"instances": [{}]}, r"instances\[0\]: no image found \(keys: none\)"),
    ({"instances": [{"b64": 123}]}, r"instances\[0\]: expected a base64 string, got int"),
    ({"instances": [{"image_bytes": {"b64": None}}]}, "got NoneType"),
    ({"instances": [{"image_bytes": {"data": B64_A}}]}, r'instances\[0\]: expected \{"b64"'),
    ({"instances": [{"b64": "not base64!"}]}, r"instances\[0\]: not valid base64"),
    ({"instances": [{"b64": B64_A}], "parameters": "fast"},
     '"parameters" must be an object, got str'),
    ({"instances": [{"b64": B64_A}], "parameters": []},
     '"parameters" must be an object, got list'),
])
def test_v1_errors_name_the_problem(body, message):
    with pytest.raises(RequestError, match=message):
        parse_v1(body, MAX_IMAGES)


# ---- V2 BYTES ----------------------------------------------------------------------

def test_bytes_from_raw_binary_tensor():
    assert v2("BYTES", [2], raw=prefixed(FILE_A, FILE_B)) == [FILE_A, FILE_B]


def test_bytes_shape_b_by_1_is_accepted():
    assert v2("BYTES", [2, 1], raw=prefixed(FILE_A, FILE_B)) == [FILE_A, FILE_B]


def test_bytes_empty_element_survives_the_split():
    assert split_bytes_tensor(prefixed(b"", FILE_A), 2, "x") == [b"", FILE_A]


@pytest.mark.parametrize(("raw", "count", "message"), [
    (prefixed(FILE_A)[:-1], 1, "BYTES element 0 declares 18 bytes but only 17 remain"),
    (prefixed(FILE_A) + b"\x01\x00", 2, "ends inside an element's length prefix"),
    (prefixed(FILE_A, FILE_B), 3, "holds 2 elements; its shape says 3"),
    (prefixed(FILE_A, FILE_B), 1, "holds 2 elements; its shape says 1"),
    (struct.pack("<I", 0xFFFFFFFF) + b"abc", 1, "declares 4294967295 bytes"),
])
def test_bytes_malformed_raw_tensor(raw, count, message):
    with pytest.raises(RequestError, match=f"input 'image': .*{message}"):
        v2("BYTES", [count], raw=raw)


def test_bytes_from_json_base64_strings():
    assert v2("BYTES", [2], data=[B64_A, B64_B]) == [FILE_A, FILE_B]
    assert v2("BYTES", [2, 1], data=[[B64_A], [B64_B]]) == [FILE_A, FILE_B]


def test_bytes_from_grpc_bytes_contents_are_kept_raw():
    assert v2("BYTES", [2], data=[FILE_A, FILE_B]) == [FILE_A, FILE_B]


@pytest.mark.parametrize(("shape", "data", "message"), [
    ([3], [B64_A, B64_B], "holds 2 elements; its shape says 3"),
    ([1], B64_A, "BYTES data must be a list, got str"),
    ([1], None, "BYTES data must be a list, got NoneType"),
    ([2], [B64_A, 5], r"input 'image'\[1\]: expected a base64 string, got int"),
    ([1], ["%%%"], r"input 'image'\[0\]: not valid base64"),
    ([2, 2], [B64_A] * 4, r"BYTES input has shape \[2, 2\]; expected \[B\]"),
    ([0], [], "is empty"),
    ([5], [B64_A] * 5, r"has 5 images; the limit is 4 .*--max_images_per_request"),
    ([-1], [B64_A], "negative dimension"),
])
def test_bytes_json_errors(shape, data, message):
    with pytest.raises(RequestError, match=message):
        v2("BYTES", shape, data=data)


# ---- V2 UINT8 ----------------------------------------------------------------------

def pixels(batch: int = 2, height: int = 3, width: int = 4) -> np.ndarray:
    rng = np.random.default_rng(batch * 100 + height)
    return rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


def test_uint8_from_raw_bytes():
    arr = pixels()
    out = v2("UINT8", [2, 3, 4, 3], raw=arr.tobytes())
    assert len(out) == 2
    for i in range(2):
        assert out[i].dtype == np.uint8
        assert np.array_equal(out[i], arr[i])


def test_uint8_from_json_lists_flat_and_nested():
    arr = pixels(batch=1)
    for data in (arr.reshape(-1).tolist(), arr.tolist()):
        out = v2("UINT8", [1, 3, 4, 3], data=data)
        assert len(out) == 1
        assert np.array_equal(out[0], arr[0])


def test_uint8_whole_floats_are_accepted():
    out = v2("UINT8", [1, 1, 1, 3], data=[0.0, 128.0, 255.0])
    assert out[0].tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize(("shape", "data", "raw", "message"), [
    ([1, 2, 2], None, b"\0" * 12, r"UINT8 input has shape \[1, 2, 2\]; expected \[B, H, W, 3\]"),
    ([1, 2, 2, 4], None, b"\0" * 16, r"expected \[B, H, W, 3\]"),
    ([1, 2, 2, 3], None, b"\0" * 11, r"holds 11 bytes; shape \[1, 2, 2, 3\] needs 12"),
    ([1, 1, 1, 3], [1, 2], None, r"holds 2 values; shape \[1, 1, 1, 3\] needs 3"),
    ([1, 1, 1, 3], [0, 256, 3], None, "between 0 and 255"),
    ([1, 1, 1, 3], [0, -1, 3], None, "between 0 and 255"),
    ([1, 1, 1, 3], [0.5, 0.25, 1.0], None, "must be integers"),  # normalised floats
    ([1, 1, 1, 3], [1, "a", 3], None, "must be integers"),
    ([1, 1, 1, 3], [[1, 2], [3]], None, "integers"),
    ([5, 1, 1, 3], [0] * 15, None, "limit is 4 per request"),
    ([1, 2000, 1000, 3], None, b"", r"images are 1000x2000 pixels; the limit is 1 megapixels "
                                    r"\(--max_image_pixels\)"),
])
def test_uint8_errors(shape, data, raw, message):
    with pytest.raises(RequestError, match=message):
        v2("UINT8", shape, data=data, raw=raw)


def test_pixel_limit_is_checked_from_the_shape_before_reading_data():
    # A shape declaring 100 gigapixels is refused without touching (absent) data.
    with pytest.raises(RequestError, match="--max_image_pixels"):
        v2("UINT8", [1, 100_000, 1_000_000, 3], data=None)


def test_unsupported_datatype_says_what_is_accepted():
    with pytest.raises(RequestError, match=r"input 'image' has datatype FP32; expected BYTES "
                                          r"\(encoded images\) or UINT8"):
        v2("FP32", [1, 2, 2, 3], data=[0.0] * 12)


def test_datatype_is_case_insensitive():
    assert v2("bytes", [1], data=[B64_A]) == [FILE_A]


def test_the_image_input_is_chosen_by_name_or_alone():
    image = Tensor("image", "BYTES", (1,), ["x"])
    other = Tensor("other", "BYTES", (1,), ["y"])
    assert image_input([other, image]) is image
    assert image_input([other]) is other  # one input: its name does not matter
    with pytest.raises(RequestError, match="expected one input named 'image', got: other, more"):
        image_input([other, Tensor("more", "BYTES", (1,), [])])
    with pytest.raises(RequestError, match="got: none"):
        image_input([])
