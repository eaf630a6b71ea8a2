"""The CPU engine: puts a detector's dense layers on OpenVINO, checked, or says why not.

:func:`accelerate` exports backbone + head (single-stage detectors) or backbone + RPN head
and the box head (the R-CNN family) with ``torch.export`` (see :mod:`.ov_graph` and
:mod:`.rcnn_graph`), compiles them in the precision :mod:`.precision` chooses, checks them
against eager, and swaps the model's parts in place. Nothing here uses TorchScript, and
no C++ compiler is needed (OpenVINO brings its kernels), so it works in the runtime image.
Measurements are in docs/speed.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import int8, rcnn_graph
from . import precision as prec
from .anchors import CachedAnchors
from .int8 import calibration_digest
from .ov_cache import load_or_export, private_dir, read_verdict, write_verdict
from .ov_graph import (
    Captured,
    Dense,
    EngineBackbone,
    EngineHead,
    EngineRPNHead,
    Layout,
    Runtime,
    cache_key,
    capture,
    export,
    fixed_size,
    max_error,
    rpn_head,
)
from .ov_shapes import Shapes, release_memory
from .precision import Precision

log = logging.getLogger(__name__)

# Check pictures the load-time precision check runs (eager and engine, whole model).
CHECK_PICTURES = 4
# Camera frames most pictures come as, whose shapes get a static graph soon after load
# (16:9; the load's own sample is 4:3).
COMMON_FRAMES = ((1080, 1920),)
# What an operator can do when the model runs eager (said in the log line).
FALLBACK_ADVICE = (
    "the model runs eager on torch, several times slower on a CPU: if the reason names a "
    "cache folder, fix it or pass --cache_dir ''; if it names a precision, pass "
    "--cpu_precision fp32; a model torch.export cannot trace keeps --no_cpu_accel "
    "(and please report it with the line above)")


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

    @property
    def name(self) -> str:
        """The engine in a word or two: ``openvino-bf16``, ``openvino-fp32`` or ``torch``."""
        return f"openvino-{self.precision}" if self.engine else "torch"

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
        if self.eager and not self.engine:
            parts.append(FALLBACK_ADVICE)
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


@dataclass
class _Parts:
    """The eager modules the engine stands in for, their graphs and the sample inputs."""

    dense: Dense
    captured: Captured
    graph: Any  # the dense ov.Model
    static: bool
    box: rcnn_graph.BoxHead | None = None
    box_graph: Any = None  # the box head's ov.Model


def _install(model: nn.Module, parts: _Parts, shapes: Shapes, box: Any, tag: str) -> None:
    dense = parts.dense
    model.backbone = EngineBackbone(dense.backbone, parts.captured.layout, shapes,
                                    f"{tag}.dense")
    if dense.head is not None:
        model.head = EngineHead(dense.head)
    if dense.rpn_head is not None:
        model.rpn.head = EngineRPNHead(dense.rpn_head)  # type: ignore[union-attr]
    if parts.box is not None and box is not None:
        rcnn_graph.install(model, parts.box, box)


def _uninstall(model: nn.Module, parts: _Parts) -> None:
    dense = parts.dense
    model.backbone = dense.backbone
    if dense.head is not None:
        model.head = dense.head
    if dense.rpn_head is not None:
        model.rpn.head = dense.rpn_head  # type: ignore[union-attr]
    if parts.box is not None:
        rcnn_graph.uninstall(model, parts.box)


def _build(model: nn.Module, parts: _Parts, runtime: Runtime, tag: str, check: bool = True
           ) -> tuple[Shapes, float]:
    """Compiles the graphs for the sample's shape (and dynamic), installs them; the
    largest error against eager (0 without ``check``)."""
    gate = prec.GATES[runtime.precision]
    x = parts.captured.x
    shape = tuple(x[:1].shape)
    dense = parts.dense
    dynamic = None if parts.static else runtime.compile(parts.graph)

    def eager(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return tuple(dense(t))

    shapes = Shapes(runtime, None if parts.static else parts.graph, dynamic, eager,
                    gate.tolerance, f"{tag}.dense")
    compiled = runtime.compile(parts.graph, shape)
    error = 0.0
    if check:
        with torch.inference_mode():
            want = eager(x[:1])
            error = max_error(want, tuple(compiled(x[:1])))
            if dynamic is not None:
                error = max(error, max_error(want, tuple(dynamic(x[:1]))))
    shapes.add(shape, compiled)
    box = None
    if parts.box is not None and parts.box_graph is not None:
        box = runtime.compile(parts.box_graph)
        regions = parts.captured.box_input
        assert regions is not None
        if check:
            with torch.inference_mode():
                error = max(error, max_error(tuple(parts.box(regions)), tuple(box(regions))))
    _install(model, parts, shapes, box, tag)
    return shapes, error


def _try(model: nn.Module, parts: _Parts, runtime: Runtime, tag: str,
         checks: Sequence[np.ndarray], reference: Sequence[prec.Dets], verified: bool
         ) -> str | None:
    """Installs the engine in ``runtime.precision``; None when it passed, else why not.
    ``verified``: a verdict says these graphs passed before; no check runs again."""
    gate = prec.GATES[runtime.precision]
    _, error = _build(model, parts, runtime, tag, check=not verified)
    if verified:
        return None
    if error > gate.tolerance:
        _uninstall(model, parts)
        return f"outputs differ from eager by {error:.2g} (relative; limit {gate.tolerance})"
    if runtime.precision is Precision.FP32 or not checks:
        return None
    ok, words = prec.agreement(runtime.precision, reference, _detect(model, checks))
    log.info("CPU engine %s check on %d pictures: %s", runtime.precision.value, len(checks),
             words)
    if not ok:
        _uninstall(model, parts)
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
    folder = private_dir(Path(options.cache_dir)) if options.cache_dir else None
    native = prec.native_precisions()
    first, why_first = prec.resolve(options.precision, native)
    checks = [*prec.pictures(options.check_dir, CHECK_PICTURES)]
    if options.example and len(checks) < CHECK_PICTURES:
        checks += prec.pictures(Path(options.example).parent, 1)
    verdict = _recall(model, sample, tag, folder, first, checks)
    try:
        captured = verdict[0] if verdict else capture(model, sample)
    except Exception as exc:  # noqa: BLE001
        report.eager["model"] = f"the sample did not run ({type(exc).__name__}: {exc})"
        return report
    parts = _parts(model, captured)
    names = _part_names(parts)
    try:
        runtime = Runtime(first, options.threads, options.workers, folder)
        _export(parts, tag, folder, runtime, report)
    except Exception as exc:  # noqa: BLE001 - code that does not export: keep it eager
        report.eager["+".join(names)] = (
            f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return report
    reference = _detect(model, checks) if first is not Precision.FP32 and not verdict else []
    order = [first] + ([Precision.FP32] if first is not Precision.FP32 else [])
    if first is Precision.INT8:
        order = [Precision.INT8, native[0]] + ([Precision.FP32] if native[0] is not
                                                 Precision.FP32 else [])
    if verdict:  # these graphs passed their checks before: run what was chosen then
        order = [Precision(verdict[1]["precision"])]
    refused: list[str] = []
    graph = parts.graph
    for choice in order:
        runtime.precision, runtime.config = choice, prec.ov_config(
            choice, options.threads, options.workers)
        parts.graph = graph
        if choice is Precision.INT8:
            parts.graph = int8.quantized(model, graph, options.check_dir, folder,
                                         cache_key(tag, parts.dense, captured.x[:1].shape, True),
                                         refused)
            if parts.graph is None:
                continue
        try:
            why = _try(model, parts, runtime, tag, checks, reference, verified=bool(verdict))
        except Exception as exc:  # noqa: BLE001 - a graph the runtime cannot take
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if why is None:
            release_memory()  # the load's eager checks' activations
            _settle_common(model)
            report.engine = names
            report.static = parts.static
            report.precision = choice.value
            report.why_precision = verdict[1]["why"] if verdict else "; ".join(
                [*refused, why_first if not refused else f"then {choice.value}"])
            if not verdict:
                write_verdict(folder, _verdict_name(parts, tag, first, checks), {
                    "precision": choice.value, "why": report.why_precision,
                    **dataclasses.asdict(captured.layout),
                    "box_shape": None if captured.box_input is None else
                    [1, *captured.box_input.shape[1:]]})
            return report
        refused.append(f"{choice.value} refused: {why}")
        log.warning("CPU engine: %s refused: %s", choice.value, why)
    report.eager["+".join(names)] = "; ".join(refused)
    return report


def _verdict_name(parts: _Parts, tag: str, precision: Precision,
                  checks: Sequence[np.ndarray]) -> str:
    key = cache_key(tag, parts.dense, parts.captured.x[:1].shape, parts.static)
    return f"verdict-{key}-{precision.value}-{calibration_digest(checks)}"


def _recall(model: nn.Module, sample: list[torch.Tensor], tag: str, folder: Path | None,
            precision: Precision, checks: Sequence[np.ndarray]
            ) -> tuple[Captured, dict[str, Any]] | None:
    """The sample's inputs and layout as a passed check recorded them, without running the
    model, and that verdict; None when no check passed for these weights, input shape,
    precision and check pictures."""
    transform: Any = getattr(model, "transform", None)
    if folder is None or not isinstance(transform, nn.Module):
        return None
    with torch.inference_mode():
        x = transform([t.clone() for t in sample])[0].tensors
    head = getattr(model, "head", None)
    box = rcnn_graph.parts(model)
    guess = (Layout((), (), False) if isinstance(head, nn.Module) else
             Layout((), None, rpn_head(model) is not None))
    probe = _parts(model, Captured(x, guess, None if box is None else x))
    data = read_verdict(folder, _verdict_name(probe, tag, precision, checks))
    if data is None:
        return None
    try:
        layout = Layout(tuple(data["feature_keys"]), None if data["head_keys"] is None else
                        tuple(data["head_keys"]), bool(data["rpn"]))
        regions = None if data["box_shape"] is None else torch.zeros(data["box_shape"])
        Precision(data["precision"])
    except (KeyError, TypeError, ValueError):
        return None
    return Captured(x, layout, regions), data


def _settle_common(model: nn.Module) -> None:
    """Has the background check and compile the shapes of common camera frames."""
    shapes = getattr(model.backbone, "graphs", None)
    transform: Any = getattr(model, "transform", None)
    if not isinstance(shapes, Shapes) or shapes.model is None or transform is None:
        return
    with torch.inference_mode():
        found = [tuple(transform([torch.zeros(3, h, w)])[0].tensors[:1].shape)
                 for h, w in COMMON_FRAMES]
    shapes.settle(found)


def _parts(model: nn.Module, captured: Captured) -> _Parts:
    """What goes on the engine: backbone + head, or backbone + RPN head and box head."""
    layout = captured.layout
    head = getattr(model, "head", None) if layout.head_keys is not None else None
    backbone = model.backbone
    assert isinstance(backbone, nn.Module)
    dense = Dense(backbone, head if isinstance(head, nn.Module) else None,
                  rpn_head(model) if layout.rpn else None).eval()
    box = rcnn_graph.parts(model) if captured.box_input is not None else None
    return _Parts(dense, captured, None, fixed_size(model) is not None, box)


def _part_names(parts: _Parts) -> list[str]:
    names = ["backbone"]
    if parts.dense.head is not None:
        names.append("head")
    if parts.dense.rpn_head is not None:
        names.append("rpn head")
    if parts.box is not None:
        names.append("box head")
    return names


def _export(parts: _Parts, tag: str, folder: Path | None, runtime: Runtime,
            report: Report) -> None:
    """Fills ``parts``' graphs, exported or from the cache."""
    x = parts.captured.x
    key = cache_key(tag, parts.dense, x[:1].shape, parts.static)
    parts.graph, report.cached = load_or_export(
        f"dense-{key}", lambda: export(parts.dense, x, parts.static), folder, runtime)
    regions = parts.captured.box_input
    if parts.box is not None and regions is not None:
        box = parts.box
        key = cache_key(f"{tag}.box", box, (-1, *regions.shape[1:]), False)
        parts.box_graph, cached = load_or_export(
            f"box-{key}", lambda: rcnn_graph.export(box, regions), folder, runtime)
        report.cached = report.cached and cached
