"""Base64 as clients really send it: standard or URL-safe, padded or not, line-wrapped."""

from __future__ import annotations

import base64
import binascii

from .errors import RequestError


def b64decode(text: str | bytes, where: str) -> bytes:
    """Decodes standard or URL-safe base64; ``where`` names the input in the error.

    Padding may be missing and whitespace (line breaks) is ignored; any other character
    outside the alphabet is an error.
    """
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError as exc:
            raise RequestError(f"{where}: base64 string has non-ASCII characters") from exc
    # Line-wrapped (MIME) base64, as `base64 file.jpg` writes it, is still base64.
    text = b"".join(text.split())
    if b"-" in text or b"_" in text:
        text = text.replace(b"-", b"+").replace(b"_", b"/")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: not valid base64 ({exc})") from exc
