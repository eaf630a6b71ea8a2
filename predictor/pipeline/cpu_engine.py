"""The CPU engine: puts a detector's dense layers on OpenVINO, checked, or says why not.

:func:`accelerate` exports backbone (+ head) with ``torch.export`` (see :mod:`.ov_graph`),
compiles it in the precision :mod:`.precision` chooses, checks it against eager, and
swaps the model's parts in place. Nothing here uses TorchScript: the next torch release
cannot take the path away, and no C++ compiler is needed (OpenVINO brings its kernels),
so it works in the runtime image.

Measured on the demo detector's backbone + head (one thread, batch 1, 320x320,
interleaved rounds, busy 2-core machine, so relative): OpenVINO fp32 1.1x the traced
TorchScript path it replaced, bf16 1.8x; the graph exported with ``torch.export`` and
given static shapes runs as fast as the one from the legacy ONNX exporter (docs/speed.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import precision as prec
from .anchors import CachedAnchors
from .ov_graph import (
    Dense,
    EngineBackbone,
    EngineHead,
    Runtime,
    Shapes,
    cache_key,
    capture,
    export,
    fixed_size,
    max_error,
)
from .precision import Precision

log = logging.getLogger(__name__)

# Check pictures the load-time precision check runs (eager and engine, whole model).
CHECK_PICTURES = 4


@dataclass
class Report:
    """What :func:`accelerate` did, for the log and the tests."""

    engine: list[str] = field(default_factory=list)  # parts on the engine
    eager: dict[str, str] = field(default_factory=dict)  # part -> why it stays eager
    cached: bool = False
    static: bool = False
    precision: str = ""
    why_precision: str = ""
    resize_first: bool = False

    def summary(self) -> str:
        """One log line."""
        parts = []
        if self.engine:
            shapes = "static shape" if self.static else "static per shape, then dynamic"
            cached = ", from cache" if self.cached else ""
            parts.append(f"OpenVINO {self.precision} runs {'+'.join(self.engine)} "
                         f"({shapes}{cached}; {self.why_precision})")
        if self.resize_first:
            parts.append("resize before normalise")
        parts += [f"{p} eager: {why}" for p, why in self.eager.items()]
        return "; ".join(parts)


@dataclass(frozen=True)
class Options:
    """How to build the engine (from the server's flags)."""

    precision: str = "auto"  # auto, fp32, bf16, fp16, int8
    threads: int = 1  # per inference worker
    workers: int = 1
    cache_dir: str | None = None
    check_dir: str | None = None  # --calibration_dir: the user's own pictures
    example: str | None = None  # a picture that ships with the package


def private_dir(path: Path) -> Path | None:
    """``path``, created 0700; None (no cache) when someone else could write into it.

    A folder owned by root and written at image build time is trusted too (read-only
    to the server). A tampered graph would give wrong answers, so only our own counts.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        log.warning("cache dir %s unusable (%s): exporting without a cache", path, exc)
        return None
    if info.st_uid not in (os.getuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("cache dir %s is not private to this user: exporting without a cache", path)
        return None
    return path


def resize_first(model: nn.Module, sample: list[torch.Tensor]) -> str | None:
    """Makes the model's transform resize before it normalises; None if done, else why not.

    Normalising is a per-channel scale and shift and bilinear resizing a per-channel
    weighted mean, so the order does not change the result (to float rounding), but
    normalising the resized picture touches a third of the pixels of a 640x480 one.
    Checked on the sample; else left as it was.
    """
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    transform = getattr(model, "transform", None)
    if not isinstance(transform, GeneralizedRCNNTransform):
        return ""  # not a torchvision transform: nothing to say
    with torch.no_grad():
        want = transform([t.clone() for t in sample])[0].tensors
    normalize, resize = transform.normalize, transform.resize

    def resize_then_normalize(image: torch.Tensor, target: Any = None) -> Any:
        image, target = resize(image, target)
        return normalize(image), target

    transform.normalize = lambda image: image
    transform.resize = resize_then_normalize
    with torch.no_grad():
        got = transform([t.clone() for t in sample])[0].tensors
    error = max_error(want, got)
    if error > 1e-3:
        del transform.normalize, transform.resize  # back to the class's own methods
        return f"resized then normalised differs by {error:.2g}"
    return None


def _cache_anchors(model: nn.Module) -> None:
    for owner in (model, getattr(model, "rpn", None)):
        generator = getattr(owner, "anchor_generator", None)
        if isinstance(generator, nn.Module) and not isinstance(generator, CachedAnchors):
            owner.anchor_generator = CachedAnchors(generator)  # type: ignore[union-attr]


def _detect(model: nn.Module, pictures: Sequence[np.ndarray]) -> list[prec.Dets]:
    out = []
    with torch.inference_mode():
        for pic in pictures:
            det = model([torch.from_numpy(np.array(pic)).permute(2, 0, 1)
                         .float().div(255.0)])[0]
            out.append((det["boxes"].numpy(), det["scores"].numpy(), det["labels"].numpy()))
    return out


def _model_inputs(model: nn.Module, pictures: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What the backbone sees for each picture (the transform's output), for calibration."""
    out = []
    with torch.inference_mode():
        for pic in pictures:
            tensor = torch.from_numpy(np.array(pic)).permute(2, 0, 1).float() / 255
            transform: Any = model.transform
            out.append(transform([tensor])[0].tensors.numpy())
    return out


def _graph(dense: Dense, x: torch.Tensor, tag: str, static: bool, folder: Path | None,
           runtime: Runtime) -> tuple[Any, bool]:
    """The exported ``ov.Model``, from the cache when it is there; (model, cached)."""
    import openvino as ov

    path = None
    if folder is not None:
        path = folder / f"dense-{cache_key(tag, dense, x[:1].shape, static)}.xml"
        if path.is_file() and path.with_suffix(".bin").is_file():
            try:
                return runtime.core.read_model(str(path)), True
            except Exception as exc:  # noqa: BLE001 - a truncated or stale file: export again
                log.warning("cached %s unreadable (%s): exporting again", path, exc)
    model = export(dense, x, static)
    if path is not None:
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        try:
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot cache %s (%s)", path, exc)
    return model, False


def _calibration_digest(pictures: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for pic in pictures:
        digest.update(np.ascontiguousarray(pic).tobytes())
    return digest.hexdigest()[:16]


def _install(model: nn.Module, dense: Dense, layout: Any, shapes: Shapes, tag: str) -> None:
    model.backbone = EngineBackbone(dense.backbone, layout, shapes, f"{tag}.dense")
    if dense.head is not None:
        model.head = EngineHead(dense.head)


def _uninstall(model: nn.Module, dense: Dense) -> None:
    model.backbone = dense.backbone
    if dense.head is not None:
        model.head = dense.head


def _build(model: nn.Module, dense: Dense, layout: Any, x: torch.Tensor, graph: Any,
           runtime: Runtime, static: bool, tag: str) -> tuple[Shapes, float]:
    """Compiles ``graph`` for the sample's shape (and dynamic), installs it; the error."""
    gate = prec.GATES[runtime.precision]
    shape = tuple(x[:1].shape)
    dynamic = None if static else runtime.compile(graph)

    def eager(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return tuple(dense(t))

    shapes = Shapes(runtime, None if static else graph, dynamic, eager, gate.tolerance,
                    f"{tag}.dense")
    compiled = runtime.compile(graph, shape)
    with torch.inference_mode():
        error = max_error(eager(x[:1]), tuple(compiled(x[:1])))
    shapes.add(shape, compiled)
    _install(model, dense, layout, shapes, tag)
    return shapes, error


def _try(model: nn.Module, dense: Dense, layout: Any, x: torch.Tensor, graph: Any,
         runtime: Runtime, static: bool, tag: str, checks: Sequence[np.ndarray],
         reference: Sequence[prec.Dets]) -> str | None:
    """Installs the engine in ``runtime.precision``; None when it passed, else why not."""
    gate = prec.GATES[runtime.precision]
    _, error = _build(model, dense, layout, x, graph, runtime, static, tag)
    if error > gate.tolerance:
        _uninstall(model, dense)
        return f"outputs differ from eager by {error:.2g} (relative; limit {gate.tolerance})"
    if runtime.precision is Precision.FP32 or not checks:
        return None
    ok, words = prec.agreement(runtime.precision, reference, _detect(model, checks))
    log.info("CPU engine %s check on %d pictures: %s", runtime.precision.value, len(checks),
             words)
    if not ok:
        _uninstall(model, dense)
        return words
    return None


def accelerate(model: nn.Module, tag: str, sample: list[torch.Tensor],
               options: Options) -> Report:
    """Swaps the model's backbone (and head) for the OpenVINO engine, in place, where it can.

    Args:
        model: an eval-mode torchvision detector on the CPU.
        tag: names the model in cache keys (its architecture).
        sample: a list of one ``3 x H x W`` float image, as the model takes it.
        options: precision, threads, cache folder, check pictures.
    """
    report = Report()
    if isinstance(model, torch.jit.ScriptModule):
        report.eager["model"] = "a TorchScript archive is run as it is"
        return report
    if not isinstance(getattr(model, "backbone", None), nn.Module):
        report.eager["model"] = "no backbone to export"
        return report
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        report.eager["model"] = f"OpenVINO is not installed ({exc})"
        return report
    _cache_anchors(model)
    why = resize_first(model, sample)
    if why is None:
        report.resize_first = True
    elif why:
        report.eager["transform"] = why
    try:
        x, layout = capture(model, sample)
    except Exception as exc:  # noqa: BLE001
        report.eager["model"] = f"the sample did not run ({type(exc).__name__}: {exc})"
        return report
    head = getattr(model, "head", None) if layout.head_keys is not None else None
    backbone = model.backbone
    assert isinstance(backbone, nn.Module)
    dense = Dense(backbone, head if isinstance(head, nn.Module) else None).eval()
    static = fixed_size(model) is not None
    folder = private_dir(Path(options.cache_dir)) if options.cache_dir else None
    native = prec.native_precisions()
    first, why_first = prec.resolve(options.precision, native)
    try:
        runtime = Runtime(first, options.threads, options.workers, folder)
        graph, report.cached = _graph(dense, x, tag, static, folder, runtime)
    except Exception as exc:  # noqa: BLE001 - code that does not export: keep it eager
        report.eager["backbone+head" if head is not None else "backbone"] = (
            f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return report
    checks = [*prec.pictures(options.check_dir, CHECK_PICTURES)]
    if options.example and len(checks) < CHECK_PICTURES:
        checks += prec.pictures(Path(options.example).parent, 1)
    reference = _detect(model, checks) if first is not Precision.FP32 else []
    order = [first] + ([Precision.FP32] if first is not Precision.FP32 else [])
    if first is Precision.INT8:
        order = [Precision.INT8, native[0]] + ([Precision.FP32] if native[0] is not
                                                 Precision.FP32 else [])
    refused: list[str] = []
    for choice in order:
        runtime.precision, runtime.config = choice, prec.ov_config(
            choice, options.threads, options.workers)
        candidate = graph
        if choice is Precision.INT8:
            candidate = _int8(model, graph, options, folder, tag, dense, x, refused)
            if candidate is None:
                continue
        try:
            why = _try(model, dense, layout, x, candidate, runtime, static, tag, checks,
                       reference)
        except Exception as exc:  # noqa: BLE001 - a graph the runtime cannot take
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if why is None:
            report.engine = ["backbone", "head"] if head is not None else ["backbone"]
            report.static = static
            report.precision = choice.value
            report.why_precision = "; ".join([*refused, why_first if not refused else
                                              f"then {choice.value}"])
            return report
        refused.append(f"{choice.value} refused: {why}")
        log.warning("CPU engine: %s refused: %s", choice.value, why)
    report.eager["backbone+head" if head is not None else "backbone"] = "; ".join(refused)
    return report


def _int8(model: nn.Module, graph: Any, options: Options, folder: Path | None, tag: str,
          dense: Dense, x: torch.Tensor, refused: list[str]) -> Any:
    """The int8 graph calibrated on ``--calibration_dir``, or None (reason in ``refused``)."""
    import openvino as ov

    pictures = prec.pictures(options.check_dir, prec.MAX_CALIBRATION)
    if not pictures:
        refused.append("int8 refused: it needs --calibration_dir with pictures to calibrate on")
        return None
    path = None
    if folder is not None:
        key = cache_key(tag, dense, x[:1].shape, True) + _calibration_digest(pictures)
        path = folder / f"dense-int8-{hashlib.sha256(key.encode()).hexdigest()[:32]}.xml"
        if path.is_file():
            return ov.Core().read_model(str(path))
    try:
        quantized = prec.quantize(graph, _model_inputs(model, pictures))
    except ImportError:
        refused.append("int8 refused: NNCF is not installed (pip install nncf)")
        return None
    if path is not None:
        ov.save_model(quantized, str(path), compress_to_fp16=False)
    return quantized
