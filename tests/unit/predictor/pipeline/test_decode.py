"""decode: encoded files and pixel arrays to validated H x W x 3 uint8 RGB."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile

from predictor.pipeline.decode import (
    BACKGROUND,
    DecodeError,
    ImageLimits,
    check_pixels,
    check_size,
    decode_image,
)
from tests.support.pngs import png_header_only

LIMITS = ImageLimits()
JPEG_TOLERANCE = 12  # flat colour blocks survive quality-95 JPEG within a few levels


def quadrants(height: int = 32, width: int = 48) -> np.ndarray:
    """Four flat colour blocks: red, green / blue, white, so any flip or turn shows."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    h, w = height // 2, width // 2
    arr[:h, :w] = (255, 0, 0)
    arr[:h, w:] = (0, 255, 0)
    arr[h:, :w] = (0, 0, 255)
    arr[h:, w:] = (255, 255, 255)
    return arr


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def flat_diff(out: np.ndarray, want: np.ndarray, margin: int = 4) -> int:
    """Largest difference away from colour edges, where lossy codecs bleed colours."""
    assert out.shape == want.shape
    padded = np.pad(want, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    height, width = want.shape[:2]
    flat = np.ones((height, width), dtype=bool)
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            flat &= (padded[dy:dy + height, dx:dx + width] == want).all(axis=2)
    assert flat.mean() > 0.3  # enough of the picture is compared
    return max_diff(out[flat], want[flat])


# ---- formats -----------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "kwargs", "tolerance"), [
    ("PNG", {}, 0),
    ("BMP", {}, 0),
    ("WEBP", {"lossless": True}, 0),
    ("WEBP", {"quality": 95}, JPEG_TOLERANCE),
    ("JPEG", {"quality": 95}, JPEG_TOLERANCE),
    ("GIF", {}, 0),  # four colours fit the palette exactly
])
def test_formats_decode_to_rgb_uint8_with_the_right_pixels(fmt, kwargs, tolerance):
    arr = quadrants()
    out = decode_image(encode(Image.fromarray(arr), fmt, **kwargs), LIMITS)
    assert out.shape == (32, 48, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    assert flat_diff(out, arr) <= tolerance


def test_phone_jpeg_with_mpo_extension_is_accepted():
    # Cameras write JPEGs with an MP Format extension, which PIL reports as "MPO".
    arr = quadrants()
    data = encode(Image.fromarray(arr), "MPO", save_all=True, quality=95,
                  append_images=[Image.new("RGB", (48, 32), (9, 9, 9))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_image(data, LIMITS)
    assert flat_diff(out, arr) <= JPEG_TOLERANCE  # the first (main) picture


# ---- EXIF orientation --------------------------------------------------------------

@pytest.mark.parametrize(("orientation", "expected"), [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # camera turned right: display turned clockwise
    (8, lambda a: np.rot90(a, 1)),
])
def test_exif_orientation_is_applied(orientation, expected):
    arr = quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, LIMITS)
    want = expected(arr)
    assert out.shape == want.shape
    assert flat_diff(out, want) <= JPEG_TOLERANCE


# ---- modes -------------------------------------------------------------------------

def test_grayscale_becomes_three_equal_channels():
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    out = decode_image(encode(Image.fromarray(gray, "L"), "PNG"), LIMITS)
    assert out.shape == (16, 16, 3)
    for c in range(3):
        assert np.array_equal(out[:, :, c], gray)


def test_opaque_grayscale_with_alpha_keeps_the_gray_values():
    img = Image.new("LA", (8, 4), (77, 255))
    out = decode_image(encode(img, "PNG"), LIMITS)
    assert out.shape == (4, 8, 3)
    assert (out == 77).all()


def test_transparency_is_composited_onto_white():
    # Half-transparent grey over white, and a fully transparent pixel: what a viewer shows.
    img = Image.new("LA", (8, 4), (77, 128))
    img.putpixel((0, 0), (0, 0))
    out = decode_image(encode(img, "PNG"), LIMITS)
    assert out[0, 0].tolist() == [255, 255, 255]
    expected = round(77 * 128 / 255 + 255 * (1 - 128 / 255))
    assert abs(int(out[1, 1, 0]) - expected) <= 1
    assert tuple(BACKGROUND) == (255, 255, 255)


def test_palette_with_transparency_shows_the_background_where_transparent():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    data = encode(img, "PNG", transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    out = decode_image(data, LIMITS)
    assert out.shape == (8, 8, 3)
    assert (out[:, :4] == BACKGROUND).all()
    assert (out[:, 4:] == (200, 100, 50)).all()


def test_an_object_under_fully_transparent_pixels_is_not_seen():
    # Drawn into the colour channels but with alpha 0: invisible to anyone looking at the
    # picture, so the model must not see it either.
    hidden = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    ImageDraw.Draw(hidden).rectangle((5, 5, 30, 25), fill=(200, 30, 30, 0))
    blank = Image.new("RGB", (40, 30), BACKGROUND)
    assert np.array_equal(decode_image(encode(hidden, "PNG"), LIMITS), np.asarray(blank))
    assert np.array_equal(decode_image(encode(hidden, "WEBP", lossless=True), LIMITS),
                          np.asarray(blank))


def test_rgb_with_a_transparent_colour_key_is_composited():
    img = Image.new("RGB", (6, 5), (12, 34, 56))
    img.putpixel((0, 0), (1, 2, 3))
    out = decode_image(encode(img, "PNG", transparency=(1, 2, 3)), LIMITS)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [12, 34, 56]


def test_cmyk_jpeg_becomes_rgb():
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, LIMITS)
    assert out.shape == (16, 16, 3)
    assert max_diff(out, np.full((16, 16, 3), (255, 0, 0), np.uint8)) <= JPEG_TOLERANCE


@pytest.mark.parametrize("fmt", ["BMP", "PNG"])
def test_one_bit_images_become_black_and_white(fmt):
    img = Image.new("1", (8, 4), 1)
    img.paste(0, (0, 0, 4, 4))
    out = decode_image(encode(img, fmt), LIMITS)
    assert out[:, :4].max() == 0
    assert out[:, 4:].min() == 255


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(data, LIMITS)
    assert (out == (255, 0, 0)).all()


def test_16_bit_grayscale_png_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535, 255]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode_image(data, LIMITS)
    assert out.shape == (1, 4, 3)
    row = out[0, :, 0].astype(int)
    assert row[0] == 0
    assert abs(row[1] - 128) <= 1
    assert row[2] == 255
    assert row[3] <= 1  # 255 of 65535 is nearly black, not saturated


# ---- errors ------------------------------------------------------------------------

def test_empty_bytes_say_empty():
    with pytest.raises(DecodeError, match=r"instance 2: empty image \(0 bytes\)"):
        decode_image(b"", LIMITS, "instance 2")


def test_random_bytes_say_not_an_image_and_list_formats():
    data = np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes()
    with pytest.raises(DecodeError, match="image 0: not an image file.*JPEG, PNG"):
        decode_image(data, LIMITS, "image 0")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(fmt):
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(DecodeError, match=f"truncated or corrupt {fmt}"):
        decode_image(data[: len(data) // 2], LIMITS)


def test_tiff_is_refused_as_a_format():
    data = encode(Image.fromarray(quadrants()), "TIFF")
    with pytest.raises(DecodeError, match="format TIFF is not accepted"):
        decode_image(data, LIMITS)


def test_zero_size_header_is_refused():
    with pytest.raises(DecodeError):
        decode_image(png_header_only(0, 5), LIMITS)
    with pytest.raises(DecodeError, match=r"zero size \(0x5 pixels\)"):
        check_size(0, 5, LIMITS, "image")


def test_over_max_image_pixels_names_the_flag():
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    limits = ImageLimits(max_pixels=4_000, max_side=1_000)
    with pytest.raises(DecodeError, match=r"image 3: image is 100x50 pixels.*--max_image_pixels"):
        decode_image(data, limits, "image 3")
    assert decode_image(data, ImageLimits(max_pixels=5_000)).shape == (50, 100, 3)


def test_over_max_image_side_names_the_flag():
    data = encode(Image.new("RGB", (300, 2)), "PNG")
    with pytest.raises(DecodeError, match=r"300x2 pixels; the limit is 256.*--max_image_side"):
        decode_image(data, ImageLimits(max_side=256))


@pytest.mark.parametrize(("limits", "flag"), [
    (ImageLimits(), "--max_image_side"),
    (ImageLimits(max_side=100_000), "--max_image_pixels"),
])
def test_decompression_bomb_is_refused_from_the_header(monkeypatch, limits, flag):
    loads: list[object] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        loads.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    data = png_header_only(50_000, 50_000)  # 7.5 GB of pixels declared in 140 bytes
    assert len(data) < 200
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DecodeError, match=f"50000x50000 pixels.*{flag}"):
            decode_image(data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 4 * 1024 * 1024
    assert loads == []  # no pixel was ever decoded


# ---- check_pixels ------------------------------------------------------------------

def test_check_pixels_accepts_rgb_uint8():
    arr = np.zeros((4, 5, 3), dtype=np.uint8)[:, ::-1]  # a non-contiguous view
    out = check_pixels(arr, LIMITS)
    assert out.shape == (4, 5, 3)
    assert out.flags.c_contiguous


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((4, 5, 3), dtype=np.float32), "dtype float32; expected uint8"),
    (np.zeros((4, 5), dtype=np.uint8), r"shape \[4, 5\]; expected \[H, W, 3\]"),
    (np.zeros((4, 5, 4), dtype=np.uint8), r"shape \[4, 5, 4\]"),
    (np.zeros((0, 5, 3), dtype=np.uint8), "zero size"),
    (np.zeros((3, 20, 3), dtype=np.uint8), "--max_image_side"),
])
def test_check_pixels_refuses_bad_arrays(array, message):
    with pytest.raises(DecodeError, match=f"image 1: .*{message}"):
        check_pixels(array, ImageLimits(max_side=16), "image 1")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_the_clients_drawings_see_transparency_as_the_server_does(mode: str):
    # The client draws its boxes on the picture the model saw: same white background.
    from client._images import rgb_pixels

    img = Image.new("RGBA", (24, 16), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((2, 2, 12, 10), fill=(200, 30, 30, 0))  # hidden
    ImageDraw.Draw(img).rectangle((14, 4, 20, 12), fill=(20, 90, 200, 140))  # half
    if mode == "LA":
        img = img.convert("LA")
    elif mode == "P":
        img = img.convert("RGB").convert("P")
        img.info["transparency"] = 0
    data = encode(img, "PNG", **({"transparency": 0} if mode == "P" else {}))
    server = decode_image(data, LIMITS)
    client = rgb_pixels(Image.open(io.BytesIO(data)))
    assert np.array_equal(server, client)
    if mode != "P":
        assert (server[2:10, 2:12] == BACKGROUND).all()
