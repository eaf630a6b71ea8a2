"""A request's image sources to decoded pixels: the decode policy of the server.

Images decode in parallel in a thread pool, off the event loop. Each request has a
budget of decoded pixels (``--max_batch_pixels``): a request's images are all held in
memory until its answer is sent, so once it is over the budget nothing more of it is
decoded. With ``--gpu_decode`` plain JPEGs are decoded on the model's device instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from .decode import (
    DecodeError,
    ImageLimits,
    ImageSource,
    Scaled,
    check_pixels,
    decode_for_model,
    is_plain_jpeg,
    open_checked,
)

if TYPE_CHECKING:  # torch stays out of this module: only engine.py needs it at run time
    import torch

Image: TypeAlias = "np.ndarray | torch.Tensor | Scaled"
"""An image for :meth:`~predictor.pipeline.engine.Engine.run`: ``H x W x 3`` uint8 numpy,
``3 x H x W`` uint8 torch (what ``Engine.decode_jpeg`` returns, already on the device),
or a JPEG decoded at reduced scale (:class:`Scaled`, boxes reported in the picture's own
pixels)."""


def image_size(img: Image) -> tuple[int, int]:
    """(height, width) of the picture as sent, whatever its form."""
    if isinstance(img, Scaled):
        return img.size
    if isinstance(img, np.ndarray):
        return int(img.shape[0]), int(img.shape[1])
    return int(img.shape[1]), int(img.shape[2])  # a torch tensor, channels first


def pixels(img: Image) -> int:
    """Pixels of a decoded image (array or tensor)."""
    height, width = image_size(img)
    return height * width


class PixelBudget:
    """Decoded pixels one request may hold; shared by its decode threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def _error(self, where: str) -> DecodeError:
        return DecodeError(
            f"{where}: the request's images add up to more than {self.limit / 1e6:g} megapixels "
            f"once decoded; the limit is {self.limit / 1e6:g} megapixels per batch "
            f"(--max_batch_pixels); send fewer or smaller images per request")

    def check(self, where: str) -> None:
        """Raises when the budget is already spent."""
        if self.used > self.limit:
            raise self._error(where)

    def spend(self, amount: int, where: str) -> None:
        """Adds one decoded image; raises when the request passes the limit."""
        with self._lock:
            self.used += amount
            over = self.used > self.limit
        if over:
            raise self._error(where)


class ImageDecoder:
    """Decodes the images of one request at a time, in ``pool``."""

    def __init__(self, limits: ImageLimits, max_request_pixels: int, pool: Executor,
                 device_jpeg: Callable[[bytes], Image] | None = None,
                 shrink: Callable[[int, int], tuple[int, int]] | None = None) -> None:
        self.limits = limits
        self.max_request_pixels = max_request_pixels
        self.pool = pool
        self.device_jpeg = device_jpeg
        self.shrink = shrink  # (width, height) the model resizes to: JPEGs decode smaller

    def _one(self, source: ImageSource, where: str, budget: PixelBudget) -> Image:
        budget.check(where)  # once the request is over its budget, decode nothing more
        image: Image
        if isinstance(source, np.ndarray):
            image = check_pixels(source, self.limits, where)
        elif self.device_jpeg is not None and is_plain_jpeg(
                header := open_checked(source, self.limits, where)):
            try:
                image = self.device_jpeg(source)
            except ValueError as exc:
                raise DecodeError(f"{where}: truncated or corrupt {header.format} data "
                                  f"({exc})") from exc
        else:
            image = decode_for_model(source, self.limits, self.shrink, where)
        budget.spend(pixels(image), where)
        return image

    async def decode(self, sources: Sequence[ImageSource]) -> list[Image]:
        """All of a request's images, decoded in parallel; DecodeError names the bad one."""
        loop = asyncio.get_running_loop()
        budget = PixelBudget(self.max_request_pixels)
        single = len(sources) == 1
        return list(await asyncio.gather(*(
            loop.run_in_executor(self.pool, self._one, src,
                                 "image" if single else f"image {i}", budget)
            for i, src in enumerate(sources))))
