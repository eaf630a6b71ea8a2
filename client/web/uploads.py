"""Reading uploads within the limits: ``POST /api/detect``'s pictures and options, and
the multipart form every picture route shares (:func:`read_form`).

The body is counted as it streams (``Content-Length`` is checked first) and parsed in
memory, so an upload never touches the disk (the container's root is read-only) and
never holds more than ``max_upload_bytes``. Every refusal is an :class:`ApiError` that
names the limit or the field: 413 for size, 400 for the rest.
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import ApiError
from .settings import WebSettings

__all__ = ["FIELDS", "Picture", "Upload", "check_picture", "read_form", "read_fraction",
           "read_upload"]

#: The form fields ``POST /api/detect`` reads (``api_key`` only when the backend has one).
FIELDS = ("file", "score_threshold", "classes", "max_detections", "api_key", "model")
_MAX_FIELD_BYTES = 4096


@dataclass(frozen=True)
class Picture:
    """One uploaded picture: its file name as sent, and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class Upload:
    """What one request asks: pictures, in order, and the detection options."""

    pictures: tuple[Picture, ...]
    score_threshold: float | None = None
    classes: tuple[str, ...] | None = None
    max_detections: int | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None  # another model of the service (the page's model picker)


async def read_upload(request: Request, settings: WebSettings) -> Upload:
    """Reads and checks the multipart body of a detect request.

    Raises:
        ApiError: 413 when the body is over ``max_upload_bytes``; 400 when it is not
            multipart, has no picture, too many, an empty or unreadable one, or a bad option.
    """
    form = await read_form(
        request, settings, max_files=settings.max_files, max_fields=len(FIELDS) + 4,
        how="send the pictures as multipart/form-data, one 'file' field per picture (e.g. "
            "curl -F file=@picture.jpg)",
        too_many=f"too many pictures: at most {settings.max_files} per request (the "
                 f"backend's --max-files)")
    try:
        unknown = sorted({key for key in form if key not in FIELDS})
        if unknown:
            raise ApiError(400, f"unknown form field(s) {', '.join(map(repr, unknown))}; the "
                                f"fields are {', '.join(FIELDS)}")
        pictures = [await _picture(item, i) for i, item in enumerate(form.getlist("file"))]
        if not pictures:
            raise ApiError(400, "no picture in the request: add one or more 'file' fields")
        return Upload(
            pictures=tuple(pictures),
            score_threshold=read_fraction("score_threshold",
                                          _text(form.getlist("score_threshold"))),
            classes=_classes(_text(form.getlist("classes"))),
            max_detections=_max_detections(_text(form.getlist("max_detections"))),
            api_key=_text(form.getlist("api_key")),
            model=_text(form.getlist("model")) or None,
        )
    finally:
        await form.close()


async def read_form(request: Request, settings: WebSettings, *, max_files: int,
                    max_fields: int, how: str, too_many: str) -> FormData:
    """The multipart form of ``request``, read in memory within ``max_upload_bytes``.

    Args:
        request: The request.
        settings: The limits.
        max_files: Most file parts.
        max_fields: Most parts of any kind.
        how: What to say to a caller who did not send multipart (how to send it).
        too_many: What to say when there are more than ``max_files`` file parts.

    Raises:
        ApiError: 413 over the size limit; 400 when the body is not multipart or broken.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, how)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise _too_large(settings, int(declared))
    parser = _InMemoryParser(
        request.headers, _limited(request.stream(), settings),
        max_files=max_files, max_fields=max_fields, max_part_size=_MAX_FIELD_BYTES)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise ApiError(400, too_many) from None
        raise ApiError(400, f"the upload is not valid multipart/form-data: {exc.message}"
                       ) from None


async def _limited(stream: AsyncIterator[bytes], settings: WebSettings
                   ) -> AsyncGenerator[bytes, None]:
    """The body's chunks, stopping with ApiError 413 once more than the limit arrived."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > settings.max_upload_bytes:
            raise _too_large(settings, None)
        yield chunk


def _too_large(settings: WebSettings, size: int | None) -> ApiError:
    sent = f" ({size / (1024 * 1024):.1f} MiB)" if size is not None else ""
    return ApiError(413, f"the upload is too large{sent}: at most "
                         f"{settings.max_upload_mb:g} MiB per request (the backend's "
                         f"--max-upload-mb); send fewer or smaller pictures")


class _InMemoryParser(MultiPartParser):
    """Starlette's parser, keeping file parts in memory (never in /tmp): the body it reads
    is already capped at ``max_upload_bytes``."""

    spool_max_size = sys.maxsize


async def _picture(item: Any, index: int) -> Picture:
    if not isinstance(item, UploadFile):
        raise ApiError(400, f"'file' field {index + 1} is text, not a file; send it as a "
                            f"file part (curl -F file=@picture.jpg)")
    name = item.filename or f"picture {index + 1}"
    data = await item.read()
    check_picture(name, data)
    return Picture(filename=name, data=data)


def check_picture(name: str, data: bytes) -> None:
    """Reads the header only: enough to refuse what is not a picture, with its name.

    Raises:
        ApiError: 400 naming the file when it is empty, not a picture, or broken.
    """
    if not data:
        raise ApiError(400, f"file {name!r} is empty")
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ApiError(400, f"file {name!r} is not a picture; send JPEG, PNG, WebP, BMP or "
                            f"GIF files") from None
    except Exception:  # PIL raises many types on a broken header
        raise ApiError(400, f"file {name!r} is a broken picture (its header cannot be read)"
                       ) from None


def _text(values: Sequence[Any]) -> str | None:
    """The one text value of an option field; None when absent or blank."""
    texts = [v for v in values if isinstance(v, str)]
    if len(texts) != len(values):
        raise ApiError(400, "options are text fields, not files")
    if len(texts) > 1:
        raise ApiError(400, "an option field was sent more than once")
    return (texts[0].strip() or None) if texts else None


def read_fraction(name: str, text: str | None) -> float | None:
    """The number from 0 to 1 in form field ``name`` (``score_threshold`` on the page's
    API, ``min_confidence`` on DeepStack's); None when the field is absent or blank.

    Both APIs parse it here, so they accept and refuse the same texts.

    Raises:
        ApiError: 400 naming the field and the range when ``text`` is not a number, or is
            below 0, over 1 or not finite.
    """
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ApiError(400, f"{name} must be a number from 0 to 1, got {text!r}")
    return value


def _classes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    return names or None


def _max_detections(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ApiError(400, f"max_detections must be a whole number from 1, got {text!r}")
    return int(text)
