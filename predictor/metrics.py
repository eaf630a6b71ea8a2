"""Prometheus metrics of the detector, served beside KServe's own on ``/metrics``.

| name | type | meaning |
|---|---|---|
| detector_batch_size | histogram | images per batch run by the model |
| detector_queue_depth | gauge | images waiting for the model |
| detector_queue_wait_seconds | histogram | time an image waited before its batch ran |
| detector_inference_seconds | histogram | time the model took per batch |
| detector_images_total | counter | images run by the model (rate() gives images/s) |
| detector_rejected_requests_total | counter | requests refused, by reason |
| detector_gpu_memory_bytes | gauge | CUDA memory allocated by the model process |
| detector_gpu_memory_total_bytes | gauge | memory of the CUDA device the model runs on |
| detector_queue_capacity | gauge | images the queue holds before refusing (--max_queue_size) |
| detector_model_info | gauge | 1, labelled with the served model's name, version and engine |
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .pipeline.batcher import BatchStats

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The detector's metrics; create one per process (they register globally)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, *,
                 per_model: bool = False) -> None:
        # With per_model (a model repository), the metrics of one model's queue and batches
        # carry a ``model`` label; :meth:`for_model` gives the view a model records into
        # and :meth:`model_unloaded` drops its series, so the label only takes served names.
        by: list[str] = ["model"] if per_model else []
        self.per_model = per_model
        self.batch_size = Histogram("detector_batch_size", "Images per batch run by the model",
                                    by, buckets=_BATCH_BUCKETS, registry=registry)
        self.queue_depth = Gauge("detector_queue_depth", "Images waiting for the model", by,
                                 registry=registry)
        self.queue_wait = Histogram("detector_queue_wait_seconds",
                                    "Time an image waited before its batch ran", by,
                                    buckets=_TIME_BUCKETS, registry=registry)
        self.inference = Histogram("detector_inference_seconds", "Model time per batch", by,
                                   buckets=_TIME_BUCKETS, registry=registry)
        self.images = Counter("detector_images", "Images run by the model", by,
                              registry=registry)
        self.rejected = Counter("detector_rejected_requests", "Requests refused, by reason",
                                ["reason"], registry=registry)
        self.gpu_memory = Gauge("detector_gpu_memory_bytes",
                                "CUDA memory allocated by this process", registry=registry)
        # For the alerts and the dashboard (manifests/monitoring): limits and the model
        # version as series, so that a rule needs no copy of a flag's value.
        self.gpu_memory_total = Gauge("detector_gpu_memory_total_bytes",
                                      "Memory of the CUDA device the model runs on",
                                      registry=registry)
        self.queue_capacity = Gauge("detector_queue_capacity",
                                    "Images the queue holds before refusing (--max_queue_size)",
                                    by, registry=registry)
        self.model_info = Gauge("detector_model_info", "The served model (always 1)",
                                ["model", "version", "engine"], registry=registry)

    def track_queue(self, depth: Callable[[], int]) -> None:
        """Reads the queue depth at scrape time."""
        self.queue_depth.set_function(lambda: float(depth()))

    def track_gpu_memory(self, allocated: Callable[[], int], total: int = 0) -> None:
        """Reads device memory at scrape time; ``total`` is the device's size."""
        self.gpu_memory.set_function(lambda: float(allocated()))
        self.gpu_memory_total.set(total)

    def model_loaded(self, model: str, version: str, engine: str, queue_capacity: int) -> None:
        """Records what is served, what runs it (``engine``: ``openvino-bf16``,
        ``torch-cpu``...) and how many images may wait (once, after load)."""
        self.model_info.labels(model=model, version=version, engine=engine).set(1)
        self.queue_capacity.set(queue_capacity)

    def observe_batch(self, stats: BatchStats) -> None:
        """Batcher observer: records one batch."""
        self.batch_size.observe(stats.size)
        self.inference.observe(stats.run_seconds)
        self.images.inc(stats.size)
        for wait in stats.waits:
            self.queue_wait.observe(wait)

    def reject(self, reason: str) -> None:
        """Counts a refused request (``invalid``, ``overloaded``, ``timeout``...)."""
        self.rejected.labels(reason=reason).inc()

    def for_model(self, model: str) -> Metrics:
        """What one model of a repository records into: its own ``model`` series."""
        if not self.per_model:
            return self
        return _ModelMetrics(self, model)

    def model_unloaded(self, model: str, version: str, engine: str) -> None:
        """Drops an unloaded model's series (its queue-depth callback holds the model)."""
        with contextlib.suppress(KeyError):  # never recorded: the load failed
            self.model_info.remove(model, version, engine)
        if self.per_model:
            for metric in (self.batch_size, self.queue_depth, self.queue_wait, self.inference,
                           self.images, self.queue_capacity):
                with contextlib.suppress(KeyError):
                    metric.remove(model)


class _ModelMetrics(Metrics):
    """One model's view of per-model :class:`Metrics`: the same calls, its own series."""

    def __init__(self, parent: Metrics, model: str) -> None:  # no super(): shares the parent's
        self.parent = parent
        self.per_model = False
        self.batch_size = parent.batch_size.labels(model=model)
        self.queue_depth = parent.queue_depth.labels(model=model)
        self.queue_wait = parent.queue_wait.labels(model=model)
        self.inference = parent.inference.labels(model=model)
        self.images = parent.images.labels(model=model)
        self.queue_capacity = parent.queue_capacity.labels(model=model)
        self.rejected = parent.rejected
        self.gpu_memory = parent.gpu_memory
        self.gpu_memory_total = parent.gpu_memory_total
        self.model_info = parent.model_info
