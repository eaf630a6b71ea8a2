"""Runs a batch of images through the detector on one device. Knows no protocol."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..config import DEMO_MODEL_DIR, ModelConfig
from .bn_fold import fuse_conv_bn
from .decode import Scaled
from .detections import RawDetections
from .engines import OutOfMemory
from .images import Image
from .loader import LoadedModel, load_model

log = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    """``auto`` means CUDA when a device is there, else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _to_chw_float(img: Image, device: torch.device) -> torch.Tensor:
    if isinstance(img, Scaled):
        img = img.pixels
    if isinstance(img, torch.Tensor):
        return img.to(device, non_blocking=True).float().div_(255.0)
    # uint8 crosses to the device (4x less traffic than floats), then converts.
    return _from_numpy(img).to(device, non_blocking=True).permute(2, 0, 1).float().div_(255.0)


def _from_numpy(img: np.ndarray) -> torch.Tensor:
    arr = np.ascontiguousarray(img)
    # V2 UINT8 images are read-only views of the request bytes; torch warns on those.
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def _warmup_image(size: tuple[int, int]) -> np.ndarray:
    """A fixed noise picture of ``size`` (height, width)."""
    return np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _to_sent(boxes: np.ndarray, img: Image) -> np.ndarray:
    """Boxes in the pixels of the picture as sent (a draft-decoded one is smaller)."""
    if not isinstance(img, Scaled):
        return boxes
    height, width = img.size
    decoded_h, decoded_w = img.pixels.shape[:2]
    scale = np.array([width / decoded_w, height / decoded_h] * 2, dtype=boxes.dtype)
    return np.asarray(boxes * scale, dtype=boxes.dtype)


class Engine:
    """Owns the model and the device.

    ``run`` is called from the batcher's worker threads (``--inference_workers``, one by
    default); an eval-mode detector under ``inference_mode`` keeps no state between
    calls, so concurrent calls are safe.
    """

    def __init__(self, cfg: ModelConfig, workers: int = 1) -> None:
        self.cfg = cfg
        self.workers = workers  # inference workers calling run() at once
        self.loaded: LoadedModel | None = None
        self.device = torch.device("cpu")
        self.engine_report = ""  # the CPU engine's log line
        self.cpu_report: Any = None  # cpu_engine.Report, when the CPU engine was tried

    def load(self) -> LoadedModel:
        """Loads the weights and moves the model to its device; idempotent."""
        if self.loaded is not None:
            return self.loaded
        self.device = pick_device(self.cfg.device)
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        loaded = load_model(self.cfg)
        module = loaded.module.eval().to(self.device)
        if self.cfg.fuse_conv_bn:
            log.info("fused %d conv+BatchNorm pairs", fuse_conv_bn(module))
        if self.cfg.channels_last and self.device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        if self.cfg.cpu_accel and self.device.type == "cpu" and not loaded.scripted:
            self._accelerate(module, loaded.architecture)
        loaded.module = module
        self.loaded = loaded
        log.info("loaded %s from %s on %s (%d classes)", loaded.architecture, loaded.source,
                 self.device, len(loaded.labels))
        return loaded

    def _accelerate(self, module: torch.nn.Module, architecture: str) -> None:
        start = time.perf_counter()
        sample = [_to_chw_float(_warmup_image((480, 640)), self.device)]
        from . import cpu_engine

        options = cpu_engine.Options(
            precision=self.cfg.cpu_precision, threads=torch.get_num_threads(),
            workers=self.workers, cache_dir=self.cfg.cache_dir or None,
            check_dir=self.cfg.calibration_dir, example=str(DEMO_MODEL_DIR / "example.jpg"))
        report = cpu_engine.accelerate(module, architecture, sample, options)
        self.cpu_report, self.engine_report = report, report.summary()
        level = logging.WARNING if report.eager and not report.engine else logging.INFO
        log.log(level, "CPU path: %s (%.1f s)", self.engine_report, time.perf_counter() - start)

    @property
    def name(self) -> str:
        """What runs the model: ``openvino-bf16`` (the CPU engine), ``torch-cpu``..."""
        if self.cpu_report is not None and self.cpu_report.engine:
            return str(self.cpu_report.name)
        return f"torch-{self.device.type}"

    def shrink_target(self) -> Callable[[int, int], tuple[int, int]] | None:
        """For draft decoding: (width, height) the model resizes a picture to; None if unknown.

        A torchvision detector's transform resizes to a fixed size (SSD) or scales the
        short side to ``min_size`` within ``max_size`` (the others).
        """
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        assert self.loaded is not None, "load() first"
        transform = getattr(self.loaded.module, "transform", None)
        if not isinstance(transform, GeneralizedRCNNTransform) or self.loaded.scripted:
            return None
        if transform.fixed_size:
            height, width = transform.fixed_size
            return lambda _w, _h: (int(width), int(height))
        min_size, max_size = float(transform.min_size[-1]), float(transform.max_size)

        def target(w: int, h: int) -> tuple[int, int]:
            scale = min(min_size / min(w, h), max_size / max(w, h))
            return max(1, int(w * scale)), max(1, int(h * scale))

        return target

    def warm_up(self, batch_sizes: Sequence[int], size: tuple[int, int] = (480, 640)) -> float:
        """Runs each batch size once on a synthetic picture; returns the seconds spent."""
        start = time.perf_counter()
        image = _warmup_image(size)
        for n in batch_sizes:
            self.run([image] * n)
        return time.perf_counter() - start

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.fp16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def decode_jpeg(self, data: bytes) -> torch.Tensor:
        """Decodes a JPEG file with torchvision on the model's device (nvJPEG on CUDA).

        Returns ``3 x H x W`` uint8 RGB with the EXIF orientation applied. The caller
        checks the header (format, size limits) first; corrupt data raises ValueError.
        """
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as tv_decode_jpeg

        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            out = tv_decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device,
                                 apply_exif_orientation=True)
        except RuntimeError as exc:
            raise ValueError(str(exc).splitlines()[0] if str(exc) else "corrupt JPEG") from exc
        assert isinstance(out, torch.Tensor)
        return out

    def run(self, images: Sequence[Image]) -> list[RawDetections]:
        """Detects objects in uint8 RGB images; boxes in each image's pixels."""
        assert self.loaded is not None, "load() first"
        if not images:
            return []
        with torch.inference_mode():
            try:
                tensors = [_to_chw_float(img, self.device) for img in images]
                with self._autocast():
                    outputs = self.loaded.module(tensors)
                if isinstance(outputs, tuple):  # scripted detectors return (losses, detections)
                    outputs = outputs[1]
                return [
                    RawDetections(
                        boxes=_to_sent(out["boxes"].float().cpu().numpy(), img),
                        scores=out["scores"].float().cpu().numpy(),
                        labels=out["labels"].cpu().numpy(),
                    )
                    for out, img in zip(outputs, images, strict=True)
                ]
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise OutOfMemory(f"out of device memory on a batch of {len(images)}") from exc
