"""Bytes and arrays in, validated RGB pixel arrays out.

Knows nothing of HTTP, KServe or torch: every function here is pure and raises
:class:`DecodeError` with a message a caller can act on. The pixel limit is checked
from the image header, before any pixel is decoded, so a decompression bomb costs
nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import Limits

# Formats a detector is ever sent; others (TIFF, PSD, EPS...) widen the attack surface.
# MPO is how PIL names a JPEG with an MP Format extension (most phone cameras write one).
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF")

# Our own header check (check_size) is the limit; PIL's fixed bomb guard would refuse
# images that --max_image_pixels allows, with a message that names no flag.
Image.MAX_IMAGE_PIXELS = None


ImageSource = bytes | np.ndarray
"""An encoded image file to decode, or an ``H x W x 3`` uint8 RGB array."""


# Transparent pixels are seen on white, as a browser or an image viewer shows them on a
# page; the client draws its pictures on the same background.
BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class DecodeError(ValueError):
    """An input that is not a usable image; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    """The size limits one image must meet (defaults: the flags', from the configuration)."""

    max_pixels: int = Limits.max_image_pixels
    max_side: int = Limits.max_image_side


def check_size(width: int, height: int, limits: ImageLimits, where: str) -> None:
    """Raises when an image of ``width`` x ``height`` breaks a limit."""
    if width < 1 or height < 1:
        raise DecodeError(f"{where}: image has zero size ({width}x{height} pixels)")
    if width > limits.max_side or height > limits.max_side:
        raise DecodeError(
            f"{where}: image is {width}x{height} pixels; the limit is {limits.max_side} "
            f"pixels per side (--max_image_side)"
        )
    if width * height > limits.max_pixels:
        raise DecodeError(
            f"{where}: image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {limits.max_pixels / 1e6:g} megapixels (--max_image_pixels)"
        )


def open_checked(data: bytes, limits: ImageLimits, where: str = "image") -> Image.Image:
    """Reads only the header: format and size checked, no pixel decoded yet."""
    if not data:
        raise DecodeError(f"{where}: empty image (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise DecodeError(
            f"{where}: not an image file this server reads ({len(data)} bytes); "
            f"send JPEG, PNG, WebP, BMP or GIF"
        ) from exc
    except Exception as exc:  # PIL raises many types on hostile headers
        raise DecodeError(f"{where}: unreadable image header ({type(exc).__name__})") from exc
    if img.format not in ALLOWED_FORMATS:
        raise DecodeError(
            f"{where}: image format {img.format} is not accepted; send JPEG, PNG, WebP, BMP or GIF"
        )
    check_size(img.width, img.height, limits, where)
    return img


def is_plain_jpeg(img: Image.Image) -> bool:
    """A baseline/progressive 3-channel JPEG that torchvision's decoder reads as PIL would."""
    return img.format in ("JPEG", "MPO") and img.mode == "RGB"


def decode_image(data: bytes, limits: ImageLimits, where: str = "image") -> np.ndarray:
    """Decodes an encoded image file into an ``H x W x 3`` uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images are converted
    to 8-bit RGB, and a picture with transparency is composited onto :data:`BACKGROUND`.
    """
    img = open_checked(data, limits, where)
    _load(img, where)
    return to_rgb_array(img)


def _load(img: Image.Image, where: str) -> None:
    try:
        img.load()
        # In place: otherwise PIL returns a full copy even when there is nothing to turn.
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # truncated data, bad chunks, CRC errors...
        raise DecodeError(f"{where}: truncated or corrupt {img.format} data ({exc})") from exc


@dataclass(frozen=True)
class Scaled:
    """A JPEG decoded at reduced scale, and the size of the picture as it was sent."""

    pixels: np.ndarray  # h x w x 3 uint8, EXIF orientation applied
    size: tuple[int, int]  # (height, width) as sent, EXIF orientation applied


# EXIF orientations that swap width and height (the transposes and quarter turns).
_SWAPPING = (5, 6, 7, 8)
_ORIENTATION = 0x0112


def decode_for_model(data: bytes, limits: ImageLimits,
                     target: Callable[[int, int], tuple[int, int]] | None,
                     where: str = "image") -> np.ndarray | Scaled:
    """Like :func:`decode_image`, but a JPEG the model will shrink is decoded smaller.

    ``target(width, height)`` is the size the model resizes the (upright) picture to.
    When that is at most half the picture's size on both sides, libjpeg decodes at 1/2,
    1/4 or 1/8 scale (PIL's ``draft``: DCT scaling, which also averages away the aliasing
    a plain bilinear shrink has), never below the target. The result is then a
    :class:`Scaled` that remembers the size the boxes must be reported in.
    """
    img = open_checked(data, limits, where)
    if target is None or img.format not in ("JPEG", "MPO"):
        _load(img, where)
        return to_rgb_array(img)
    try:
        swap = img.getexif().get(_ORIENTATION, 1) in _SWAPPING
    except Exception:  # a broken EXIF block: exif_transpose will not turn it either
        swap = False
    width, height = (img.height, img.width) if swap else (img.width, img.height)
    want_w, want_h = target(width, height)
    if want_w * 2 <= width and want_h * 2 <= height:
        img.draft(None, (want_h, want_w) if swap else (want_w, want_h))
    _load(img, where)
    pixels = to_rgb_array(img)
    if pixels.shape[:2] == (height, width):
        return pixels
    return Scaled(pixels, (height, width))


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Converts a loaded PIL image of any mode to ``H x W x 3`` uint8 RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: keep the full range by scaling, not clipping.
        arr = np.asarray(img, dtype=np.int64)
        top = 65535 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        gray = np.clip(arr * 255 // max(top, 1), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        gray = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if "transparency" in img.info and img.mode in ("P", "L", "RGB"):
        img = img.convert("RGBA")  # a palette entry or a colour key marked transparent
    if img.mode in _ALPHA_MODES:
        # What a person sees: transparent pixels show the background, not what the file
        # happens to store under them (dropping alpha would reveal that).
        flat = Image.new("RGBA", img.size, (*BACKGROUND, 255))
        flat.alpha_composite(img.convert("RGBA"))
        img = flat
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def check_pixels(array: np.ndarray, limits: ImageLimits, where: str = "image") -> np.ndarray:
    """Validates an already-decoded ``H x W x 3`` uint8 array (the V2 UINT8 input)."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise DecodeError(
            f"{where}: pixel array has shape {list(array.shape)}; expected [H, W, 3] RGB"
        )
    if array.dtype != np.uint8:
        raise DecodeError(f"{where}: pixel array has dtype {array.dtype}; expected uint8")
    check_size(int(array.shape[1]), int(array.shape[0]), limits, where)
    return np.ascontiguousarray(array)
