"""Fixtures shared by every test folder: model folders and the real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import DEMO_MODEL_DIR, Server, save_random_model, start_server


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights ssdlite320 with the demo's five classes, saved as safetensors."""
    return save_random_model(tmp_path_factory.mktemp("random-model"))


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path
                 ) -> Iterator[Server]:
    """The real server with random weights; session-wide, stopped at the end."""
    server = start_server(tmp_path_factory.mktemp("logs"), random_model_dir,
                          "--max_batch_size", "4")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server with the embedded trained demo detector."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        pytest.skip("the demo detector is not in predictor/demo/model yet")
    server = start_server(tmp_path_factory.mktemp("demo-logs"), DEMO_MODEL_DIR)
    yield server
    server.stop()
