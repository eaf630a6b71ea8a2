"""The ``kserve.Model`` subclass: thin glue between KServe's protocols and the pipeline.

preprocess: parse the request (V1 JSON, raw body, V2 REST or gRPC) and decode the
images in a thread pool; predict: queue them in the batcher and await their results;
postprocess: apply the request's options and encode the answer in the request's
protocol. Only this module knows both the protocol and the model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import (
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

from . import batcher as batching
from . import grpc_params
from .config import ServerConfig
from .decode import (
    DecodeError,
    ImageLimits,
    check_pixels,
    decode_image,
    is_plain_jpeg,
    open_checked,
)
from .detections import (
    LabelMap,
    ParameterError,
    RawDetections,
    RequestOptions,
    parse_options,
    select,
)
from .encode import V2_OUTPUTS, to_v1, to_v2
from .engine import Engine, Image, OutOfMemory, image_size
from .errors import InternalError, Overloaded, ShuttingDownError, TimedOut
from .metrics import Metrics
from .payload import INPUT_NAME, ImageSource, Parsed, parse_v1, parse_v2_input

log = logging.getLogger(__name__)


def _aspect_bucket(img: Image) -> int:
    """Aspect ratio in half-octave steps: 4:3 and 3:2 share a bucket, 16:9 and 9:16 don't."""
    height, width = image_size(img)
    return round(2 * math.log2(width / height))


def _pixels(img: Image) -> int:
    height, width = image_size(img)
    return height * width


@dataclass
class Job:
    """One request on its way through the pipeline."""

    images: list[Image]
    options: RequestOptions
    v2: InferRequest | None = None
    raw: list[RawDetections] = field(default_factory=list)


class _PixelBudget:
    """Decoded pixels one request may hold (--max_batch_pixels); shared by its decode threads.

    A request's images are all held in memory until its answer is sent, so the batch
    limit is also the limit of one request; checked as images decode, it bounds the
    memory a request can take to the limit plus the images being decoded at that moment.
    """

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

    def spend(self, pixels: int, where: str) -> None:
        """Adds one decoded image; raises when the request passes the limit."""
        with self._lock:
            self.used += pixels
            over = self.used > self.limit
        if over:
            raise self._error(where)


class DetectionModel(Model):  # type: ignore[misc]
    """Serves a torchvision detector over KServe's V1, V2 REST and gRPC protocols."""

    ready: bool

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        super().__init__(config.model_name)
        self.config = config
        self.runner = Engine(config.model)
        self.metrics = metrics
        self.labels = LabelMap(["__background__"])
        self._limits = ImageLimits(config.limits.max_image_pixels, config.limits.max_image_side)
        self._decoder = ThreadPoolExecutor(max_workers=config.batching.decode_threads,
                                           thread_name_prefix="decode")
        b = config.batching
        self.batcher: batching.Batcher[Image, RawDetections] = batching.Batcher(
            self.runner.run,
            max_batch_size=b.max_batch_size,
            max_delay_s=b.max_batch_delay_ms / 1000.0,
            max_queue_size=b.max_queue_size,
            on_batch=metrics.observe_batch if metrics else None,
            cost=_pixels,
            max_batch_cost=config.limits.max_batch_pixels,
            max_queue_cost=config.limits.max_batch_pixels * 4,
            workers=b.inference_workers,
            group_key=_aspect_bucket if b.group_by_aspect_ratio else None,
        )
        self.load_seconds = 0.0

    # ---- lifecycle -------------------------------------------------------------
    def load(self) -> bool:
        """Loads weights and runs the warm-up; ``ready`` only after both succeed."""
        if self.ready:
            return True
        start = time.perf_counter()
        loaded = self.runner.load()
        self.labels = LabelMap(loaded.labels)
        self.runner.warm_up(self.config.model.warmup_batch_sizes)
        self.load_seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.track_queue(lambda: self.batcher.depth)
            if self.runner.device.type == "cuda":
                import torch

                self.metrics.track_gpu_memory(torch.cuda.memory_allocated)
        log.info("model %s ready in %.1f s", self.name, self.load_seconds)
        self.ready = True
        return True

    async def drain(self, timeout_s: float) -> None:
        """Stops taking new work and finishes what is queued."""
        await self.batcher.stop(timeout_s)

    # ---- metadata --------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 metadata: one input of encoded image files."""
        # The UINT8 [B, H, W, 3] alternative is documented; KServe's gRPC TensorMetadata
        # has no field to list it here.
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata: the five detection outputs."""
        return [{"name": n, "datatype": d, "shape": s} for n, d, s in V2_OUTPUTS]

    # ---- pipeline --------------------------------------------------------------
    def _parse(self, body: Any) -> Parsed:
        max_images = self.config.limits.max_images_per_request
        if not isinstance(body, InferRequest):
            return parse_v1(body, max_images)
        tensors = [t for t in body.inputs if t.name == INPUT_NAME]
        if not tensors and len(body.inputs) == 1:
            tensors = list(body.inputs)
        if len(tensors) != 1:
            names = ", ".join(t.name for t in body.inputs) or "none"
            raise DecodeError(f"expected one input named '{INPUT_NAME}', got: {names}")
        t = tensors[0]
        sources = parse_v2_input(t.name, t.datatype, t.shape, t.data, t._raw_data,
                                 max_images, self.config.limits.max_image_pixels)
        params: Any = body.parameters or {}
        if body.from_grpc or not isinstance(params, Mapping):
            params = grpc_params.to_python(params)
        return Parsed(sources, params)

    def _decode_one(self, source: ImageSource, where: str, budget: _PixelBudget) -> Image:
        budget.check(where)  # once the request is over its budget, decode nothing more
        image: Image
        if isinstance(source, np.ndarray):
            image = check_pixels(source, self._limits, where)
        elif self.config.model.gpu_decode and is_plain_jpeg(
                header := open_checked(source, self._limits, where)):
            try:
                image = self.runner.decode_jpeg(source)
            except ValueError as exc:
                raise DecodeError(f"{where}: truncated or corrupt {header.format} data "
                                  f"({exc})") from exc
        else:
            image = decode_image(source, self._limits, where)
        budget.spend(_pixels(image), where)
        return image

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Job:
        """Parses the request and decodes its images in parallel."""
        try:
            parsed = self._parse(payload)
            options = parse_options(
                parsed.parameters, self.labels,
                default_threshold=self.config.model.score_threshold,
                min_threshold=self.config.model.min_score_threshold,
                max_detections=self.config.model.max_detections,
            )
            loop = asyncio.get_running_loop()
            single = len(parsed.sources) == 1
            budget = _PixelBudget(self.config.limits.max_batch_pixels)
            images = await asyncio.gather(*(
                loop.run_in_executor(self._decoder, self._decode_one, src,
                                     "image" if single else f"image {i}", budget)
                for i, src in enumerate(parsed.sources)
            ))
        except (DecodeError, ParameterError) as exc:
            self._reject("invalid")
            raise InvalidInput(str(exc)) from exc
        return Job(list(images), options, payload if isinstance(payload, InferRequest) else None)

    async def predict(self, job: Job, headers: dict[str, str] | None = None) -> Job:
        """Queues the images for the batcher and waits for their detections."""
        timeout = self.config.batching.request_timeout_ms / 1000.0 or None
        try:
            job.raw = await self.batcher.submit(job.images, timeout)
        except batching.QueueFull as exc:
            self._reject("overloaded")
            if exc.by == "cost":
                msg = (f"server busy: queued images hold {exc.queued / 1e6:.0f} megapixels; "
                       f"the limit is {exc.limit / 1e6:.0f} (4 x --max_batch_pixels)")
            else:
                msg = (f"server busy: {exc.queued} images queued; the limit is {exc.limit} "
                       f"(--max_queue_size)")
            raise Overloaded(f"{msg}; retry after {exc.retry_after} s",
                             retry_after=exc.retry_after) from exc
        except batching.DeadlineExceeded as exc:
            self._reject("timeout")
            raise TimedOut(f"{exc} (--request_timeout_ms "
                           f"{self.config.batching.request_timeout_ms:g})") from exc
        except batching.ShuttingDown as exc:
            self._reject("shutting_down")
            raise ShuttingDownError(str(exc), retry_after=1) from exc
        except OutOfMemory as exc:
            # The batcher already retried in smaller batches: this image fails even alone.
            self._reject("out_of_memory")
            log.warning("request failed: %s", exc)
            raise Overloaded(
                "an image of this request does not fit in the device's memory, even in a "
                "batch of its own; send smaller images (or lower --max_image_pixels)") from exc
        except Exception as exc:
            log.exception("inference failed")
            raise InternalError("inference failed; the server log has the details") from exc
        return job

    async def postprocess(self, job: Job, headers: dict[str, str] | None = None) -> Any:
        """Applies the request's options and encodes the answer in its protocol."""
        try:
            dets = [select(raw, job.options, self.labels, image_size(img))
                    for raw, img in zip(job.raw, job.images, strict=True)]
        except Exception as exc:
            log.exception("postprocessing failed")
            raise InternalError("postprocessing failed; the server log has the details") from exc
        if job.v2 is None:
            return {"predictions": [to_v1(d) for d in dets]}
        return self._v2_response(job.v2, to_v2(dets))

    def _v2_response(self, request: InferRequest, tensors: dict[str, np.ndarray]) -> InferResponse:
        outputs = []
        for name, datatype, _ in V2_OUTPUTS:
            out = InferOutput(name=name, shape=list(tensors[name].shape), datatype=datatype)
            # Raw (binary) outputs: gRPC clients read only raw_output_contents.
            out.set_data_from_numpy(tensors[name], binary_data=True)
            outputs.append(out)
        requested = None
        wants_binary = bool(request.use_binary_outputs)
        if request.request_outputs:
            known = {n for n, _, _ in V2_OUTPUTS}
            requested = []
            for req_out in request.request_outputs:
                if req_out.name not in known:
                    raise InvalidInput(f"unknown output '{req_out.name}'; outputs are "
                                       f"{', '.join(sorted(known))}")
                binary = req_out.binary_data
                params = dict(req_out.parameters or {})
                params["binary_data"] = wants_binary if binary is None else bool(binary)
                requested.append(RequestedOutput(req_out.name, params))
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=wants_binary,
            requested_outputs=requested,
        )

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(reason)
