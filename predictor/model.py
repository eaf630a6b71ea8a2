"""The ``kserve.Model`` subclass: thin glue between the wire and the pipeline.

Requests arrive already parsed (:class:`predictor.protocol.Request`) from the REST
routes and the gRPC servicer. preprocess: validate the options and decode the images;
predict: queue them in the batcher and await their results; postprocess: apply the
options and build the answer in the request's protocol. Only this module knows both
the protocol and the model.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput

from .config import ServerConfig
from .errors import (
    InternalError,
    Overloaded,
    ServiceError,
    ShuttingDownError,
    TimedOut,
)
from .metrics import Metrics
from .pipeline import batcher as batching
from .pipeline.decode import DecodeError, ImageLimits
from .pipeline.detections import (
    Detections,
    LabelMap,
    ParameterError,
    RawDetections,
    RequestOptions,
    select,
)
from .pipeline.engines import OutOfMemory, make_engine
from .pipeline.images import Image, ImageDecoder, image_size, pixels
from .protocol import Request, V2Answer, v1, v2
from .protocol.options import parse_options

log = logging.getLogger(__name__)


def _aspect_bucket(img: Image) -> int:
    """Aspect ratio in half-octave steps: 4:3 and 3:2 share a bucket, 16:9 and 9:16 don't."""
    height, width = image_size(img)
    return round(2 * math.log2(width / height))


def batch_failure(exc: Exception, request_timeout_ms: float) -> tuple[str, ServiceError]:
    """A failure of the batcher or the model, worded for the caller: (metric reason, error)."""
    if isinstance(exc, batching.QueueFull):
        if exc.by == "cost":
            msg = (f"server busy: queued images hold {exc.queued / 1e6:.0f} megapixels; "
                   f"the limit is {exc.limit / 1e6:.0f} (4 x --max_batch_pixels)")
        else:
            msg = (f"server busy: {exc.queued} images queued; the limit is {exc.limit} "
                   f"(--max_queue_size)")
        return "overloaded", Overloaded(f"{msg}; retry after {exc.retry_after} s",
                                        retry_after=exc.retry_after)
    if isinstance(exc, batching.DeadlineExceeded):
        return "timeout", TimedOut(f"{exc} (--request_timeout_ms {request_timeout_ms:g})")
    if isinstance(exc, batching.ShuttingDown):
        return "shutting_down", ShuttingDownError(str(exc), retry_after=1)
    if isinstance(exc, OutOfMemory):
        # The batcher already retried in smaller batches: this image fails even alone.
        return "out_of_memory", Overloaded(
            "an image of this request does not fit in the device's memory, even in a batch "
            "of its own; send smaller images (or lower --max_image_pixels)")
    return "internal", InternalError("inference failed; the server log has the details")


@dataclass
class Job:
    """One request on its way through the pipeline."""

    request: Request
    options: RequestOptions
    images: list[Image]
    raw: list[RawDetections] = field(default_factory=list)


class DetectionModel(Model):  # type: ignore[misc]
    """Serves a torchvision detector over KServe's V1, V2 REST and gRPC protocols."""

    ready: bool
    draining = False  # set on SIGTERM: not ready, yet requests already received are served

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        super().__init__(config.model_name)
        self.config = config
        self.limits = config.limits
        self.runner = make_engine(config.model, workers=config.batching.inference_workers or 1)
        self.metrics = metrics
        self.labels = LabelMap(["__background__"])
        self.version = ""
        b = config.batching
        self.decoder = ImageDecoder(
            ImageLimits(config.limits.max_image_pixels, config.limits.max_image_side),
            config.limits.max_batch_pixels,
            ThreadPoolExecutor(max_workers=b.decode_threads, thread_name_prefix="decode"),
            self.runner.decode_jpeg if config.model.gpu_decode else None)
        self.batcher: batching.Batcher[Image, RawDetections] = batching.Batcher(
            self.runner.run, max_batch_size=b.max_batch_size,
            max_delay_s=b.max_batch_delay_ms / 1000.0, max_queue_size=b.max_queue_size,
            on_batch=metrics.observe_batch if metrics else None, cost=pixels,
            max_batch_cost=config.limits.max_batch_pixels,
            max_queue_cost=config.limits.max_batch_pixels * 4, workers=b.inference_workers or 1,
            group_key=_aspect_bucket if b.group_by_aspect_ratio else None)
        self.load_seconds = 0.0

    def load(self) -> bool:
        """Loads weights and runs the warm-up; ``ready`` only after both succeed.

        KServe's data plane calls ``load()`` again for any request to a model that is not
        ready (``DataPlane.get_model``, kserve 0.21 ``protocol/dataplane.py``): once
        SIGTERM has set ``draining``, that must not warm the model up again on the event
        loop and mark it ready in the middle of the drain.
        """
        if self.ready or self.draining:
            return self.ready
        start = time.perf_counter()
        loaded = self.runner.load()
        if self.config.model.draft_decode:
            self.decoder.shrink = self.runner.shrink_target()
        self.labels = LabelMap(loaded.labels)
        self.version = loaded.version
        self.runner.warm_up(self.config.model.warmup_batch_sizes)
        self.load_seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.track_queue(lambda: self.batcher.depth)
            self.metrics.model_loaded(self.name, self.version, self.platform,
                                      self.config.batching.max_queue_size)
            if self.runner.device.type == "cuda":
                import torch

                total = torch.cuda.get_device_properties(self.runner.device).total_memory
                self.metrics.track_gpu_memory(torch.cuda.memory_allocated, total)
        log.info("model %s version %s ready in %.1f s", self.name, self.version,
                 self.load_seconds)
        self.ready = True
        return True

    @property
    def platform(self) -> str:
        """What runs the model, for V2 metadata's ``platform``: ``openvino-bf16`` when the CPU
        engine does, ``torch-cpu`` when the model runs eager, ``torch-cuda`` on a GPU."""
        return self.runner.name

    async def drain(self, timeout_s: float) -> None:
        """Stops taking new work and finishes what is queued."""
        await self.batcher.stop(timeout_s)

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 metadata: one input of encoded image files."""
        # The UINT8 [B, H, W, 3] alternative is documented; KServe's gRPC TensorMetadata
        # has no field to list it here.
        return [{"name": v2.INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata: the five detection outputs."""
        return [{"name": n, "datatype": d, "shape": s} for n, d, s in v2.OUTPUTS]

    async def preprocess(self, payload: Request, headers: dict[str, str] | None = None) -> Job:
        """Validates the options and decodes the images in parallel."""
        m = self.config.model
        try:
            options = parse_options(payload.parameters, self.labels,
                                    default_threshold=m.score_threshold,
                                    min_threshold=m.min_score_threshold,
                                    max_detections=m.max_detections)
            images = await self.decoder.decode(payload.sources)
        except (DecodeError, ParameterError) as exc:
            raise InvalidInput(str(exc)) from exc
        return Job(payload, options, images)

    async def predict(self, job: Job, headers: dict[str, str] | None = None) -> Job:
        """Queues the images for the batcher and waits for their detections."""
        timeout = self.config.batching.request_timeout_ms / 1000.0 or None
        try:
            job.raw = await self.batcher.submit(job.images, timeout)
        except Exception as exc:
            reason, error = batch_failure(exc, self.config.batching.request_timeout_ms)
            if reason == "internal":
                log.error("inference failed", exc_info=exc)
            elif reason == "out_of_memory":
                log.warning("request failed: %s", exc)
            self._reject(reason)
            raise error from exc
        return job

    async def postprocess(self, job: Job, headers: dict[str, str] | None = None
                          ) -> dict[str, Any] | V2Answer:
        """Applies the request's options and builds the answer in its protocol."""
        try:
            dets: list[Detections] = [
                select(raw, job.options, self.labels, image_size(img))
                for raw, img in zip(job.raw, job.images, strict=True)]
            if job.request.v2 is None:
                return v1.answer(dets)
            return v2.answer(job.request.v2, dets)
        except Exception as exc:
            log.exception("postprocessing failed")
            self._reject("internal")
            raise InternalError("postprocessing failed; the server log has the details") from exc

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(reason)
