"""metrics: a repository's models record under their own ``model`` label, and go with it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from predictor.metrics import Metrics
from predictor.pipeline.batcher import BatchStats


def test_one_model_server_has_no_model_label() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.for_model("x") is metrics
    metrics.observe_batch(BatchStats(2, [0.1, 0.2], 0.5, 0))
    assert "detector_images_total 2.0" in generate_latest(registry).decode()


def test_each_model_has_its_series_until_it_is_unloaded() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, per_model=True)
    a, b = metrics.for_model("site-a"), metrics.for_model("site-b")
    a.observe_batch(BatchStats(3, [0.1] * 3, 0.5, 0))
    b.observe_batch(BatchStats(1, [0.1], 0.2, 0))
    a.model_loaded("site-a", "v1", "torch-cpu", 256)
    a.track_queue(lambda: 7)
    a.reject("invalid")
    text = generate_latest(registry).decode()
    assert 'detector_images_total{model="site-a"} 3.0' in text
    assert 'detector_images_total{model="site-b"} 1.0' in text
    assert 'detector_queue_depth{model="site-a"} 7.0' in text
    assert 'detector_queue_capacity{model="site-a"} 256.0' in text
    assert 'detector_rejected_requests_total{reason="invalid"} 1.0' in text

    metrics.model_unloaded("site-a", "v1", "torch-cpu")
    text = generate_latest(registry).decode()
    assert 'model="site-a"' not in text
    assert 'detector_images_total{model="site-b"} 1.0' in text
    metrics.model_unloaded("never-loaded", "", "")  # a failed load leaves nothing to drop
