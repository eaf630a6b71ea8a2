"""Turns what a caller passes as an image into what goes on the wire.

Encoded files are sent as they are, so the server decodes the original bytes; pixel
inputs (arrays, PIL images) travel as ``UINT8`` tensors where the protocol allows and as
PNG otherwise. Nothing here knows about HTTP or gRPC.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._exceptions import UnreadableInput

if TYPE_CHECKING:
    from ._types import ImageInput

__all__ = ["PreparedImage", "encoded_batch", "pixel_batch", "prepare"]

# What the server decodes; any other format PIL reads is converted to PNG first.
_SERVER_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF"})
# EXIF orientations that turn the image by 90 degrees: the server swaps width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# Transparent pixels are seen on white, by the server and in the client's drawings.
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class PreparedImage:
    """One image, ready to send.

    Attributes:
        name: How messages refer to it: the file path, or ``image <index>``.
        encoded: Encoded file bytes, for file and bytes inputs.
        pixels: ``H x W x 3`` uint8 RGB, for array and PIL inputs.
        size: ``(height, width)`` as the server will see it (after EXIF rotation).
    """

    name: str
    encoded: bytes | None
    pixels: np.ndarray | None
    size: tuple[int, int]

    def as_encoded(self) -> bytes:
        """The image as an encoded file; pixel inputs become PNG."""
        if self.encoded is not None:
            return self.encoded
        assert self.pixels is not None
        return _png(self.pixels)


def prepare(image: ImageInput, index: int = 0) -> PreparedImage:
    """Reads and checks one input image.

    Raises:
        UnreadableInput: The file cannot be read, is not an image, or the array is not
            ``H x W x 3`` uint8.
    """
    if isinstance(image, (str, os.PathLike)):
        name = os.fsdecode(image)
        try:
            with open(image, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise UnreadableInput(f"cannot read {name}: no such file") from None
        except IsADirectoryError:
            raise UnreadableInput(f"cannot read {name}: it is a directory") from None
        except PermissionError:
            raise UnreadableInput(f"cannot read {name}: permission denied") from None
        except OSError as exc:
            raise UnreadableInput(f"cannot read {name}: {exc.strerror or exc}") from None
        return _from_encoded(data, name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _from_encoded(bytes(image), f"image {index}")
    if isinstance(image, np.ndarray):
        return _from_pixels(image, f"image {index}")
    pil = _pil_image_type()
    if pil is not None and isinstance(image, pil):
        return _from_pixels(rgb_pixels(image), f"image {index}")
    raise UnreadableInput(
        f"image {index}: cannot send a {type(image).__name__}; pass a file path, "
        f"encoded bytes, a PIL image or an HxWx3 uint8 numpy array"
    )


def encoded_batch(images: Sequence[PreparedImage]) -> list[bytes]:
    """Every image as an encoded file."""
    return [image.as_encoded() for image in images]


def pixel_batch(images: Sequence[PreparedImage]) -> np.ndarray | None:
    """A ``B x H x W x 3`` array when every image is pixels of one shape, else None."""
    if not images or any(image.pixels is None for image in images):
        return None
    shapes = {image.pixels.shape for image in images if image.pixels is not None}
    if len(shapes) != 1:
        return None
    return np.stack([image.pixels for image in images if image.pixels is not None])


def _from_encoded(data: bytes, name: str) -> PreparedImage:
    if not data:
        raise UnreadableInput(f"cannot read {name}: the file is empty")
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            fmt = img.format
            orientation = _orientation(img)
    except UnidentifiedImageError:
        raise UnreadableInput(f"cannot read {name}: not an image file") from None
    except Exception as exc:  # PIL raises many types on broken headers
        raise UnreadableInput(f"cannot read {name}: broken image header ({exc})") from None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if fmt not in _SERVER_FORMATS:
        # The server accepts few formats; converting here keeps TIFF and friends usable.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = _png(rgb_pixels(_oriented(img)))
        except Exception as exc:
            raise UnreadableInput(f"cannot read {name}: cannot decode {fmt} ({exc})") from None
    return PreparedImage(name=name, encoded=data, pixels=None, size=(height, width))


def _from_pixels(array: np.ndarray, name: str) -> PreparedImage:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise UnreadableInput(
            f"{name}: array has shape {tuple(array.shape)} and dtype {array.dtype}; "
            f"expected an HxWx3 uint8 RGB array"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise UnreadableInput(f"{name}: array has no pixels (shape {tuple(array.shape)})")
    pixels = np.ascontiguousarray(array)
    return PreparedImage(name=name, encoded=None, pixels=pixels,
                         size=(int(pixels.shape[0]), int(pixels.shape[1])))


def rgb_pixels(img: Any) -> np.ndarray:
    """Any PIL image as ``H x W x 3`` uint8 RGB, as the server converts it.

    16-bit (and 32-bit integer) grayscale is scaled to 8 bits, not clipped: PIL's own
    ``convert("RGB")`` clips, which turns a 16-bit picture white. Transparency is
    composited onto :data:`BACKGROUND` (white), as the server does.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.int64)
        top = 65535 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        gray = np.clip(arr * 255 // max(top, 1), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "F":
        gray = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    from PIL import Image

    if "transparency" in img.info and img.mode in ("P", "L", "RGB"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels on white, as the server sees them (and a viewer shows them).
        flat = Image.new("RGBA", img.size, (*BACKGROUND, 255))
        flat.alpha_composite(img.convert("RGBA"))
        img = flat
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _orientation(img: Any) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block is the server's problem, not ours
        return 1


def _oriented(img: Any) -> Any:
    from PIL import ImageOps

    return ImageOps.exif_transpose(img) or img


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    # Level 1: most of PNG's size gain at a fraction of the time of the default level.
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _pil_image_type() -> type | None:
    """PIL's Image class, without importing PIL when nothing needs it."""
    module = sys.modules.get("PIL.Image")
    return getattr(module, "Image", None) if module is not None else None
