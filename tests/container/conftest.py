"""Fixtures for the container tests: the engine, the image, and running containers.

The image is built once per session by scripts/image.sh, which skips the build when an
image for the current sources exists. Every container is removed by a finalizer, so an
interrupted run leaves nothing behind but the cached image.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._docker import (
    BUILD_TIMEOUT_S,
    DEMO_MODEL_DIR,
    HARDENED,
    HOW_TO_RUN,
    Container,
    DockerUnavailable,
    build_image,
    ensure_engine,
    mount_model,
    running,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An uncached image build takes minutes: give these tests more than the usual limit.

    Only where pytest-timeout is installed (its marker is unknown otherwise).
    """
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S + 600))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine that answers; skips (saying how to run these) when there is none."""
    if shutil.which("docker") is None and shutil.which("apt-get") is None:
        pytest.skip(f"no docker command here: {HOW_TO_RUN}")
    try:
        ensure_engine()
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine ({exc}): {HOW_TO_RUN}")
    except subprocess.SubprocessError as exc:
        pytest.skip(f"Docker engine check failed ({exc}): {HOW_TO_RUN}")


@pytest.fixture(scope="session")
def detector_image(docker_engine: None) -> str:
    """The image for the current sources (built now unless already cached)."""
    return build_image()


@pytest.fixture(scope="session")
def demo_container(detector_image: str) -> Iterator[Container]:
    """The image as shipped: default command, demo weights, read-only root, /tmp tmpfs."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        pytest.skip("the demo detector is not in predictor/demo/model yet, so the image "
                    "has no default weights to serve")
    yield from running(detector_image, docker_args=HARDENED)


@pytest.fixture(scope="module")
def random_model_container(detector_image: str, random_model_dir: Path
                           ) -> Iterator[Container]:
    """The image serving the same random-weights folder as the in-process ``served_model``."""
    yield from running(detector_image, args=("--max_batch_size", "4"),
                        docker_args=(*HARDENED, *mount_model(random_model_dir)))


@pytest.fixture(scope="session")
def sample_png() -> bytes:
    """A 320 x 320 synthetic picture with three shapes, PNG-encoded."""
    from demo.synthetic import make_sample

    image, _, _ = make_sample(7, min_objects=3, max_objects=3)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
