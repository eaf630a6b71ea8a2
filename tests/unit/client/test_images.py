"""Input images: every accepted kind, and clear errors for the rest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client import UnreadableInput
from client._base import as_image_list, chunks
from client._images import prepare


def encoded(fmt: str, size: tuple[int, int] = (6, 4), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format=fmt, **save)
    return out.getvalue()


def test_files_and_bytes_are_sent_unchanged(tmp_path: Path) -> None:
    data = encoded("JPEG")
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    from_path = prepare(path)
    from_str = prepare(str(path))
    from_bytes = prepare(data)
    assert from_path.encoded == from_str.encoded == from_bytes.encoded == data
    assert from_path.size == (4, 6)  # (height, width)
    assert from_path.name == str(path)


def test_pil_images_and_arrays_become_pixels() -> None:
    image = Image.new("L", (5, 3), 128)  # grayscale is converted to RGB
    prepared = prepare(image)
    assert prepared.pixels is not None
    assert prepared.pixels.shape == (3, 5, 3)
    array = np.zeros((2, 3, 3), np.uint8)
    assert prepare(array).size == (2, 3)
    png = prepare(array).as_encoded()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), array)


def test_exif_rotation_swaps_the_reported_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the server sees a 4 x 6 picture as 6 x 4
    data = encoded("JPEG", (6, 4), exif=exif.tobytes())
    assert prepare(data).size == (6, 4)


def test_formats_the_server_refuses_are_converted_to_png() -> None:
    prepared = prepare(encoded("TIFF"))
    assert prepared.encoded is not None
    assert Image.open(io.BytesIO(prepared.encoded)).format == "PNG"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.png", "missing.png: no such file"),
        (lambda tmp: tmp, "it is a directory"),
        (lambda tmp: b"", "the file is empty"),
        (lambda tmp: b"hello, not a picture", "not an image file"),
        (lambda tmp: np.zeros((4, 4), np.uint8), r"shape \(4, 4\) and dtype uint8"),
        (lambda tmp: np.zeros((4, 4, 3), np.float32), "dtype float32; expected an HxWx3 uint8"),
        (lambda tmp: 42, "cannot send a int"),
    ],
)
def test_unreadable_inputs_say_why(tmp_path: Path, make: object, message: str) -> None:
    with pytest.raises(UnreadableInput, match=message):
        prepare(make(tmp_path))  # type: ignore[operator]


def test_text_file_with_image_suffix_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just text")
    with pytest.raises(UnreadableInput, match=f"cannot read {path}: not an image file"):
        prepare(path)


def test_single_images_and_batched_arrays_are_normalised() -> None:
    assert len(list(as_image_list("one.png"))) == 1
    assert len(list(as_image_list(np.zeros((4, 4, 3), np.uint8)))) == 1
    assert len(list(as_image_list(np.zeros((3, 4, 4, 3), np.uint8)))) == 3
    assert len(list(as_image_list(Image.new("RGB", (2, 2))))) == 1
    assert [(start, len(b)) for start, b in chunks(range(7), 3)] == [(0, 3), (3, 3), (6, 1)]


def gray16(value: int, size: tuple[int, int] = (8, 6)) -> Image.Image:
    """A 16-bit grayscale picture of one level (0..65535)."""
    return Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16))


def test_16_bit_pictures_are_scaled_not_saturated() -> None:
    # A mid-gray 16-bit TIFF: the server does not read TIFF, so the client converts it,
    # and it must stay mid-gray (PIL's convert("RGB") would clip it to white).
    out = io.BytesIO()
    gray16(32768).save(out, format="TIFF")
    sent = Image.open(io.BytesIO(prepare(out.getvalue()).as_encoded()))
    assert np.asarray(sent.convert("RGB"))[0, 0].tolist() == [127, 127, 127]
    # The same picture given as a PIL image is sent as pixels of the same level.
    pixels = prepare(gray16(65535 // 4)).pixels
    assert pixels is not None
    assert pixels[0, 0].tolist() == [63, 63, 63]
