"""model: the kserve.Model glue's lifecycle (the protocols are tested through the server)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from predictor.config import ModelConfig, ServerConfig
from predictor.model import DetectionModel


def test_a_request_during_the_drain_does_not_load_the_model_again(
        random_model_dir: Path) -> None:
    """After SIGTERM the model is not ready; KServe's data plane calls load() for a request
    to a model that is not ready, which must not warm it up and mark it ready again."""
    cfg = replace(ServerConfig(), model=ModelConfig(model_dir=str(random_model_dir),
                                                    device="cpu", cpu_accel=False))
    model = DetectionModel(cfg)
    assert model.load()
    warmups = []
    model.runner.warm_up = lambda *a, **k: warmups.append(a) or 0.0  # type: ignore[method-assign]
    model.ready, model.draining = False, True
    assert model.load() is False
    assert not model.ready
    assert warmups == []
    model.draining = False
    assert model.load()  # outside a drain, a model that is not ready loads as before
    assert warmups
