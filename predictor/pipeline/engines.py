"""The seam between the server and what runs the model, chosen by the model folder.

Two engines answer to one protocol (:class:`Runner`):

- :class:`predictor.pipeline.engine.Engine`: a torchvision model folder (weights,
  ``config.json``), run by torch on a CUDA device or, on a CPU, with its dense layers
  on OpenVINO (:mod:`.cpu_engine`);
- :class:`CompiledEngine`: a folder written by ``python -m predictor.export``, run by
  OpenVINO and numpy alone (:mod:`.compiled`); torch is never imported, so a pod that
  serves one needs neither torch nor the CUDA libraries.

``--engine auto`` picks by the folder; ``torch`` and ``openvino`` insist, with a clear
error when the folder is the other kind. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..config import COMPILED_DEMO_DIR, ModelConfig
from .compiled import CompiledError, CompiledModel, is_compiled
from .decode import Scaled
from .detections import RawDetections

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "openvino")
# Weight files a torchvision model folder may hold (loader.py reads them).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".torchscript", ".ts")


class LoadError(RuntimeError):
    """The model could not be built or its weights could not be loaded."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory on a batch; a smaller batch may fit."""


@dataclass(frozen=True)
class Device:
    """Where the model runs, as far as the server needs to know (``type``: cpu, cuda)."""

    type: str


class Runner(Protocol):
    """What the server needs of an engine."""

    device: Any
    engine_report: str

    @property
    def name(self) -> str:
        """What runs the model, for metadata and metrics: ``openvino-bf16``, ``torch-cpu``."""
        ...

    def load(self) -> Any:
        """Loads the model (idempotent); the result has ``labels`` and ``version``."""
        ...

    def run(self, images: Sequence[Any]) -> list[RawDetections]:
        """Detects objects; boxes in each picture's pixels as sent."""
        ...

    def warm_up(self, batch_sizes: Sequence[int], size: tuple[int, int] = (480, 640)
                ) -> float:
        """Runs each batch size once; the seconds spent."""
        ...

    def shrink_target(self) -> Callable[[int, int], tuple[int, int]] | None:
        """(width, height) the model resizes a picture to, for draft decoding."""
        ...

    def decode_jpeg(self, data: bytes) -> Any:
        """A JPEG decoded on the model's device (``--gpu_decode``)."""
        ...


def _empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def make_engine(cfg: ModelConfig, workers: int = 1) -> Runner:
    """The engine for ``cfg``'s model folder and ``--engine``."""
    if (cfg.demo_if_empty and cfg.architecture is None and cfg.engine != "torch"
            and _empty(Path(cfg.model_dir)) and is_compiled(COMPILED_DEMO_DIR)):
        log.warning("--model_dir %s is empty: serving the compiled demo detector (%s), as "
                    "--demo_if_empty asks", cfg.model_dir, COMPILED_DEMO_DIR)
        cfg = dataclasses.replace(cfg, model_dir=str(COMPILED_DEMO_DIR))
    compiled = bool(cfg.model_dir) and is_compiled(Path(cfg.model_dir))
    if compiled and cfg.engine == "torch":
        raise LoadError(f"--model_dir {cfg.model_dir} holds a compiled model "
                        "(compiled.json): it runs on --engine openvino (or auto), not torch")
    if not compiled and cfg.engine == "openvino":
        raise LoadError(f"--model_dir {cfg.model_dir} is not a compiled model folder (no "
                        "compiled.json): make one with `python -m predictor.export`, or "
                        "serve this folder with --engine auto")
    if compiled:
        return CompiledEngine(cfg, workers)
    try:
        from .engine import Engine
    except ImportError as exc:
        raise LoadError(f"--model_dir {cfg.model_dir} is a torchvision model folder, and this "
                        f"runtime has no torch ({exc}): compile it with `python -m "
                        "predictor.export` and serve the compiled folder, or use the torch "
                        "image") from exc

    return Engine(cfg, workers=workers)


@dataclass
class CompiledInfo:
    """What the server reads of a loaded compiled model."""

    labels: list[str]
    version: str
    architecture: str
    source: str
    scripted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class CompiledEngine:
    """A compiled model folder behind the engine protocol (CPU only, no torch)."""

    def __init__(self, cfg: ModelConfig, workers: int = 1) -> None:
        self.cfg = cfg
        self.workers = workers
        self.device = Device("cpu")
        self.model: CompiledModel | None = None
        self.loaded: CompiledInfo | None = None
        self.engine_report = ""

    @property
    def name(self) -> str:
        """``openvino-<precision>`` once loaded."""
        return f"openvino-{self.model.precision.value}" if self.model else "openvino"

    def load(self) -> CompiledInfo:
        """Compiles the folder's graph for this CPU (from OpenVINO's cache when warm)."""
        if self.loaded is not None:
            return self.loaded
        if self.cfg.device == "cuda" or self.cfg.gpu_decode:
            raise LoadError("a compiled model folder runs on the CPU: drop --device cuda and "
                            "--gpu_decode, or serve the torch model folder on a GPU")
        folder = Path(self.cfg.model_dir)
        start = time.perf_counter()
        try:
            self.model = CompiledModel(folder, threads=self.cfg.torch_threads or 1,
                                       workers=self.workers,
                                       cache_dir=self.cfg.cache_dir or None)
        except CompiledError as exc:
            raise LoadError(str(exc)) from exc
        except (OSError, RuntimeError) as exc:  # OpenVINO's own: a truncated or wrong IR
            raise LoadError(f"{folder}: the compiled graph cannot be read "
                            f"({str(exc).splitlines()[0][:200]}): export the model again") from exc
        m = self.model.manifest
        self.engine_report = (f"OpenVINO {self.model.precision.value} runs the compiled "
                              f"{m.architecture} "
                              f"(no torch; exported with torch {m.raw['versions']['torch']})")
        log.info("CPU path: %s (%.1f s)", self.engine_report, time.perf_counter() - start)
        self.loaded = CompiledInfo(m.labels, m.version, m.architecture, str(folder))
        return self.loaded

    def run(self, images: Sequence[Any]) -> list[RawDetections]:
        """Detects objects in uint8 RGB pictures (arrays, or JPEGs decoded at reduced
        scale); boxes in each picture's pixels as sent."""
        assert self.model is not None, "load() first"
        pixels = [img.pixels if isinstance(img, Scaled) else img for img in images]
        sizes = [img.size if isinstance(img, Scaled) else (img.shape[0], img.shape[1])
                 for img in images]
        return self.model.run(pixels, sizes)

    def warm_up(self, batch_sizes: Sequence[int], size: tuple[int, int] = (480, 640)
                ) -> float:
        """Runs each batch size once on a noise picture; the seconds spent."""
        start = time.perf_counter()
        image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
        for n in batch_sizes:
            self.run([image] * n)
        return time.perf_counter() - start

    def shrink_target(self) -> Callable[[int, int], tuple[int, int]] | None:
        """Every picture is resized to the graph's fixed input size."""
        assert self.model is not None, "load() first"
        height, width = self.model.manifest.size
        return lambda _w, _h: (width, height)

    def decode_jpeg(self, data: bytes) -> Any:
        """Not available: there is no GPU on this path (refused at load)."""
        raise LoadError("--gpu_decode needs the torch engine on a CUDA device")
