"""The CPU execution path: the dense part of a detector traced, frozen and fused by oneDNN.

A torchvision detector spends most of its CPU time in two tensor-in, tensor-out parts:
``backbone`` (every detector) and ``head`` (SSD, SSDlite, RetinaNet, FCOS). Each is
traced with ``torch.jit.trace`` from a channels_last copy, frozen (weights become
constants) and run with oneDNN Graph fusion on (``torch.jit.enable_onednn_fusion``),
which compiles conv + activation + add chains into single kernels with prepacked
weights. No C++ compiler is involved: oneDNN generates its kernels itself, so this
works in the runtime image. Measured on the demo detector (one thread, CPU time per
640x480 picture, interleaved): the whole model 23 ms against 49 ms eager with BatchNorm
folded and 56 ms as torchvision builds it.

The rest of the model (resize, anchors, box decoding, NMS) stays eager, as torchvision
wrote it. The traced parts run one image at a time: a fused graph is specialised to the
shapes it saw, and on a CPU a batch of one is as fast per image as a batch of eight.
Shapes past :data:`MAX_SHAPES` run eager, so a stream of odd image sizes never falls
onto TorchScript's slow unspecialised path.

Each part is checked against eager on a sample at load; a part that cannot be traced,
or whose outputs differ, stays eager, with a log line saying why. Frozen parts are
cached under ``--cache_dir`` (keyed by torch version, architecture and a hash of the
weights), so a restart skips the trace.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import stat
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# Distinct input shapes each traced part is specialised for; later shapes run eager.
MAX_SHAPES = 4
# Profiling runs TorchScript needs before it installs the fused graph for a shape.
PROFILING_RUNS = 3
_PARTS = ("backbone", "head")
# Largest difference from eager, relative to the outputs' scale, that still counts as the
# same: fusion reorders float sums (~1e-6 seen); a wrong trace is off by far more.
TOLERANCE = 1e-3
Key = tuple[tuple[int, ...], ...]
_fusion_lock = threading.Lock()
_fusion_on = False


@dataclass
class Report:
    """What :func:`accelerate` did to each part, for the log and the tests."""

    fused: list[str] = field(default_factory=list)
    eager: dict[str, str] = field(default_factory=dict)  # part -> why
    cached: list[str] = field(default_factory=list)
    resize_first: bool = False

    def summary(self) -> str:
        """One log line."""
        done = ", ".join(f"{p}{' (cached)' if p in self.cached else ''}" for p in self.fused)
        kept = "; ".join(f"{p} eager: {why}" for p, why in self.eager.items())
        order = "resize before normalise" if self.resize_first else ""
        return "; ".join(x for x in (f"oneDNN-fused {done}" if done else "", order, kept) if x)


def enable_fusion() -> None:
    """Turns oneDNN Graph fusion on for this process, with room for MAX_SHAPES shapes."""
    global _fusion_on
    with _fusion_lock:
        if not _fusion_on:
            with _quiet():
                torch.jit.enable_onednn_fusion(True)
                torch.jit.set_fusion_strategy([("STATIC", MAX_SHAPES)])
            _fusion_on = True


def _batch_of(x: Any) -> int:
    return int((x[0] if isinstance(x, list | tuple) else x).shape[0])


def _slice(x: Any, i: int) -> Any:
    if isinstance(x, list | tuple):
        return [t[i:i + 1] for t in x]
    return x[i:i + 1]


def _shape_key(x: Any) -> Key:
    tensors = x if isinstance(x, list | tuple) else [x]
    return tuple(tuple(t.shape) for t in tensors)


def _channels_last(x: Any) -> Any:
    """4-D tensors (alone or in a list) in channels_last, the layout oneDNN runs fastest."""
    if isinstance(x, list | tuple):
        return [_channels_last(t) for t in x]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _standard(x: Any) -> Any:
    """Outputs back in the standard layout, as the eager code after the part expects."""
    if isinstance(x, torch.Tensor):
        return x.contiguous()
    if isinstance(x, dict):
        return {k: _standard(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_standard(v) for v in x)
    return x


def _concat(outputs: Sequence[Any]) -> Any:
    """Joins per-image outputs along the batch: a tensor, a list/tuple or a dict of them."""
    first = outputs[0]
    if len(outputs) == 1:
        return OrderedDict(first) if isinstance(first, dict) else first
    if isinstance(first, torch.Tensor):
        return torch.cat(list(outputs))
    if isinstance(first, dict):
        return OrderedDict((k, _concat([o[k] for o in outputs])) for k in first)
    if isinstance(first, list | tuple):
        return type(first)(_concat([o[j] for o in outputs]) for j in range(len(first)))
    raise TypeError(f"cannot join outputs of type {type(first).__name__}")


class PerImage(nn.Module):
    """Runs a traced part one image at a time, checked against eager on each new shape.

    The first image of a new shape runs both ways; the traced part keeps that shape only
    when it matched (and when fewer than :data:`MAX_SHAPES` are kept), else the shape
    runs eager from then on.
    """

    def __init__(self, name: str, traced: torch.jit.ScriptModule, eager: nn.Module,
                 checked: Any = None) -> None:
        super().__init__()
        self.name = name
        self.traced = traced
        self.eager = eager
        self._traced_shapes: set[Key] = set() if checked is None else {_shape_key(checked)}
        self._eager_shapes: set[Key] = set()
        self._checking = 0  # new shapes being checked right now
        self._lock = threading.Lock()

    def _traced(self, one: Any) -> Any:
        return _standard(self.traced(_channels_last(one)))

    def _first_time(self, one: Any, key: Key) -> Any:
        """Runs a new shape both ways and decides which way it goes from now on."""
        with self._lock:  # a slot is reserved before the check, so two threads share none
            full = len(self._traced_shapes) + self._checking >= MAX_SHAPES
            if full:
                self._eager_shapes.add(key)
            else:
                self._checking += 1
        if full:  # a new specialisation would land on TorchScript's slow path
            log.info("%s: input shape %s runs eager (%d shapes are fused already)",
                     self.name, key, MAX_SHAPES)
            return self.eager(one)
        error = float("inf")
        try:
            want = self.eager(one)
            try:
                got = self._traced(one)
                error = _max_error(want, got)
            except Exception as exc:  # a shape the trace cannot take
                why = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                why = f"outputs differ from eager by {error:.2g} (relative)"
        finally:
            with self._lock:
                self._checking -= 1
                if error <= TOLERANCE:
                    self._traced_shapes.add(key)
                else:
                    self._eager_shapes.add(key)
        if error > TOLERANCE:
            log.warning("%s: input shape %s runs eager: %s", self.name, key, why)
        return want

    def forward(self, x: Any) -> Any:
        """Same inputs and outputs as the eager part."""
        outputs = []
        for i in range(_batch_of(x)):
            one = _slice(x, i)
            key = _shape_key(one)
            if key in self._traced_shapes:
                outputs.append(self._traced(one))
            elif key in self._eager_shapes:
                outputs.append(self.eager(one))
            else:
                outputs.append(self._first_time(one, key))
        return _concat(outputs)


def _resize_first(model: nn.Module, sample: list[torch.Tensor]) -> str | None:
    """Makes the model's transform resize before it normalises; None if done, else why not.

    Normalising is a per-channel scale and shift and bilinear resizing a per-channel
    weighted mean, so the order does not change the result (to float rounding), but
    normalising the resized picture touches a third of the pixels of a 640x480 one
    (SSDlite: 3.5 -> 1.4 ms a picture). Checked on the sample; else left as it was.
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
    error = _max_error(want, got)
    if error > TOLERANCE:
        del transform.normalize, transform.resize  # back to the class's own methods
        return f"resized then normalised differs by {error:.2g}"
    return None


def _capture_inputs(model: nn.Module, sample: list[torch.Tensor]) -> dict[str, Any]:
    """The first positional input each part sees when the eager model runs ``sample``."""
    seen: dict[str, Any] = {}
    handles = []
    for name in _PARTS:
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                seen.setdefault(name, args[0])
            handles.append(part.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    return seen


def _weights_digest(part: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in part.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _private_dir(path: Path) -> Path | None:
    """``path``, created 0700; None (no cache) when someone else could write into it.

    A folder owned by root and written at image build time is trusted too (read-only
    to the server): root can change the server's code anyway.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        log.warning("cache dir %s unusable (%s): tracing without a cache", path, exc)
        return None
    if info.st_uid not in (os.getuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # A cached part is TorchScript, which runs code from the file: only trust our own.
        log.warning("cache dir %s is not private to this user: tracing without a cache", path)
        return None
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences TorchScript's deprecation warnings (load time only, on the main thread).

    torch asks for torch.compile or torch.export instead; on a CPU both need a C++
    compiler at run time, which the runtime image does not have.
    """
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


def _trace(part: nn.Module, example: Any) -> torch.jit.ScriptModule:
    with torch.no_grad(), _quiet():
        arg = (example,) if isinstance(example, list) else example
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]
            part, arg, strict=False, check_trace=False)
        frozen: torch.jit.ScriptModule = torch.jit.freeze(traced.eval())
    return frozen


def _max_error(a: Any, b: Any) -> float:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return float("inf")
        scale = float(a.abs().max()) if a.numel() else 0.0
        return float((a - b).abs().max()) / max(1.0, scale) if a.numel() else 0.0
    if isinstance(a, dict):
        if not isinstance(b, dict) or list(a) != list(b):
            return float("inf")
        return max((_max_error(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list | tuple):
        if not isinstance(b, list | tuple) or len(a) != len(b):
            return float("inf")
        return max((_max_error(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return 0.0 if a == b else float("inf")


def _build_part(name: str, part: nn.Module, example: Any, tag: str,
                cache_dir: Path | None, report: Report) -> PerImage | None:
    one = _slice(example, 0)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256("|".join([
            torch.__version__, tag, name, type(part).__qualname__, str(_shape_key(one)),
            "channels_last",
            _weights_digest(part)]).encode()).hexdigest()[:32]
        path = cache_dir / f"{name}-{key}.pt"
    traced: torch.jit.ScriptModule | None = None
    if path is not None and path.is_file():
        try:
            with _quiet():
                traced = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(path), map_location="cpu")
            report.cached.append(name)
        except Exception as exc:  # a truncated or stale file: trace again
            log.warning("cached %s unreadable (%s): tracing again", path, exc)
    if traced is None:
        # A copy: the eager part keeps its layout for the shapes that run eager.
        layout = copy.deepcopy(part).to(memory_format=torch.channels_last)
        traced = _trace(layout, _channels_last(one))
        if path is not None:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            try:
                with _quiet():
                    torch.jit.save(traced, str(tmp))
                tmp.replace(path)
            except OSError as exc:
                log.warning("cannot cache %s (%s)", path, exc)
    with torch.inference_mode():
        want = part(one)
        got = None
        for _ in range(PROFILING_RUNS):  # profiling, then the fused graph
            got = _standard(traced(_channels_last(one)))
    error = _max_error(want, got)
    if error > TOLERANCE:
        report.eager[name] = f"traced outputs differ from eager by {error:.2g} (relative)"
        return None
    return PerImage(f"{tag}.{name}", traced, part, one)


def accelerate(model: nn.Module, tag: str, sample: list[torch.Tensor],
               cache_dir: str | None) -> Report:
    """Swaps the model's backbone and head for fused, traced copies, in place, where it can.

    Args:
        model: an eval-mode torchvision detector on the CPU.
        tag: names the model in cache keys (its architecture).
        sample: a list of one ``3 x H x W`` float image, as the model takes it.
        cache_dir: where frozen parts are kept between starts; None or "" for no cache.
    """
    report = Report()
    if isinstance(model, torch.jit.ScriptModule):
        report.eager["model"] = "a TorchScript archive is run as it is"
        return report
    try:
        inputs = _capture_inputs(model, sample)
    except Exception as exc:
        report.eager["model"] = f"the sample did not run ({type(exc).__name__}: {exc})"
        return report
    if not inputs:
        report.eager["model"] = "no backbone or head to trace"
        return report
    try:
        enable_fusion()
    except Exception as exc:  # a torch without TorchScript's oneDNN fuser
        report.eager["model"] = f"no oneDNN Graph fusion in this torch ({exc})"
        return report
    why = _resize_first(model, sample)
    if why is None:
        report.resize_first = True
    elif why:
        report.eager["transform"] = why
    folder = _private_dir(Path(cache_dir)) if cache_dir else None
    for name in _PARTS:
        if name not in inputs:
            continue
        part = getattr(model, name)
        try:
            wrapped = _build_part(name, part, inputs[name], tag, folder, report)
        except Exception as exc:  # torchvision code that does not trace: keep it eager
            report.eager[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        if wrapped is not None:
            setattr(model, name, wrapped)
            report.fused.append(name)
    return report
