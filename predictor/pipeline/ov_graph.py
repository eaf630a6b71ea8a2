"""The dense layers of a detector as one OpenVINO graph, and the modules that run it.

A torchvision detector spends most of its CPU time in ``backbone`` (every detector) and
``head`` (SSD, SSDlite, RetinaNet, FCOS). At load both are exported together with
``torch.export`` (the maintained exporter: no TorchScript), converted with
``openvino.convert_model`` and compiled for this CPU, in the precision
:mod:`.precision` chose. The rest of the model (resize, anchors, box decoding, NMS)
stays eager, as torchvision wrote it.

Shapes are static wherever the architecture allows: OpenVINO's CPU plugin runs a graph
with a dynamic input through its dynamic-shape path (shape inference on every call, fewer
fused kernels), which measured 10-20 % slower on the demo detector. SSD and SSDlite
resize every picture to one size, so they get one static graph. The others (R-CNN,
RetinaNet, FCOS) keep the picture's aspect ratio: they are exported once with dynamic
height and width, and :mod:`.ov_shapes` decides which shapes also get a static graph.
The R-CNN family's box head (two MLP layers or four convs and one, then the predictor)
is a second graph, dynamic in the number of regions (:mod:`.rcnn_graph`).

Exported graphs are cached under ``--cache_dir`` as OpenVINO IR (keyed by the torch,
torchvision and OpenVINO versions, the architecture, the shape and a hash of the
weights), and OpenVINO keeps its compiled blobs there too, so a restart skips both.
Every graph is checked against eager at load, and each new shape in the background;
what fails, or cannot be exported, runs eager with a log line saying what to do.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from .precision import Precision, ov_config

log = logging.getLogger(__name__)

# Smallest side of the picture a dynamic-shape graph is exported on (see export()).
EXPORT_SIDE = 512
# Largest difference from eager, relative to the outputs' scale, that still counts as the
# same in fp32 (a wrong graph is off by far more; ~1e-6 seen).
TOLERANCE = 1e-3
Shape = tuple[int, ...]


def max_error(a: Any, b: Any) -> float:
    """Largest absolute difference between two nests of tensors, over ``a``'s scale."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return float("inf")
        if not a.numel():
            return 0.0
        return float((a - b).abs().max()) / max(1.0, float(a.abs().max()))
    if isinstance(a, dict):
        if not isinstance(b, dict) or list(a) != list(b):
            return float("inf")
        return max((max_error(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list | tuple):
        if not isinstance(b, list | tuple) or len(a) != len(b):
            return float("inf")
        return max((max_error(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return 0.0 if a == b else float("inf")


class Dense(nn.Module):
    """What is exported: backbone (and head) as one tensor-in, tuple-out module.

    Single-stage detectors export backbone + ``head``; the R-CNN family exports backbone +
    the RPN's head (``rpn_head``), whose feature maps the RoI heads still need whole.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None,
                 rpn_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.rpn_head = rpn_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The features (backbone alone), the features then the RPN head's objectness and
        box deltas per level (R-CNN), or the head's outputs and one channel of each feature
        map (whose height and width the anchor generator needs), in a fixed order.
        """
        features = self.backbone(x)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        if self.rpn_head is not None:
            objectness, deltas = self.rpn_head(list(features.values()))
            return (*features.values(), *objectness, *deltas)
        if self.head is None:
            return tuple(features.values())
        out = self.head(list(features.values()))
        return (*out.values(), *(f[:, :1] for f in features.values()))


@dataclass(frozen=True)
class Layout:
    """How the graph's flat outputs map back to what the eager code expects."""

    feature_keys: tuple[str, ...]
    head_keys: tuple[str, ...] | None  # None: the backbone alone is on the engine
    rpn: bool = False  # the RPN's head rides along (R-CNN): features stay whole


@dataclass(frozen=True)
class Captured:
    """What one eager run of the sample shows: the inputs the graphs are exported on."""

    x: torch.Tensor  # the backbone's input
    layout: Layout
    box_input: torch.Tensor | None  # the R-CNN box head's input (pooled RoI features)


def rpn_head(model: nn.Module) -> nn.Module | None:
    """The R-CNN family's RPN head (conv layers over every feature level), if any."""
    head = getattr(getattr(model, "rpn", None), "head", None)
    return head if isinstance(head, nn.Module) else None


def capture(model: nn.Module, sample: list[torch.Tensor]) -> Captured:
    """The backbone's input for ``sample``, the layout of what follows it, and the box
    head's input where the model has one."""
    seen: dict[str, Any] = {}

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
        seen.setdefault("x", args[0])

    def post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        seen.setdefault("features", out)

    def head_post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        seen.setdefault("head", out)

    def box_pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
        seen.setdefault("box", args[0])

    backbone = model.backbone
    assert isinstance(backbone, nn.Module)
    handles = [backbone.register_forward_pre_hook(pre), backbone.register_forward_hook(post)]
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        handles.append(head.register_forward_hook(head_post))
    box_head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    if isinstance(box_head, nn.Module):
        handles.append(box_head.register_forward_pre_hook(box_pre))
    try:
        with torch.no_grad():  # not inference_mode: torch.export refuses inference tensors
            model(sample)
    finally:
        for h in handles:
            h.remove()
    x, features = seen["x"], seen["features"]
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    head_out = seen.get("head")
    head_keys = tuple(head_out) if isinstance(head_out, dict) else None
    layout = Layout(tuple(features), head_keys, rpn=head_keys is None and
                    rpn_head(model) is not None)
    return Captured(x, layout, seen.get("box"))


def fixed_size(model: nn.Module) -> tuple[int, int] | None:
    """The (height, width) every picture is resized to, when the transform has one."""
    size = getattr(getattr(model, "transform", None), "fixed_size", None)
    return (int(size[0]), int(size[1])) if size else None


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes).

    Every tensor is flattened before its bytes are read: a 0-dim buffer (BatchNorm's
    ``num_batches_tracked`` in every trained ResNet) cannot be viewed as bytes as it is.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export(dense: Dense, example: torch.Tensor, static: bool) -> Any:
    """``torch.export`` then ``openvino.convert_model``: an ``ov.Model``, input 1x3xHxW.

    The input shape is given to the converter: without it OpenVINO makes every input
    dimension dynamic, even for a graph exported static.
    """
    import openvino as ov

    one = example[:1].contiguous()
    if static:
        program = torch.export.export(dense, (one,))
        shape: list[int] = list(one.shape)
    else:
        # torch.export specialises any size that is 1 in the example (a 1x1 top pyramid
        # level of a small picture would then be baked in): export on a picture large
        # enough that no level is 1 wide.
        height, width = (max(EXPORT_SIDE, -(-d // 64) * 64) for d in one.shape[-2:])
        one = torch.rand(1, one.shape[1], height, width, dtype=one.dtype)
        auto = torch.export.Dim.AUTO
        program = torch.export.export(dense, (one,), dynamic_shapes={"x": {2: auto, 3: auto}})
        shape = [1, 3, -1, -1]
    return ov.convert_model(program, input=[shape])


class Compiled:
    """One compiled graph and an inference request per calling thread."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.outputs = len(compiled.outputs)
        self._local = threading.local()

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Runs one 1x3xHxW float tensor; the outputs are copies (the request reuses its)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: x.detach().contiguous().numpy()}, share_inputs=True)
        return [torch.as_tensor(np.array(request.get_output_tensor(i).data))
                for i in range(self.outputs)]


class Runtime:
    """Holds the OpenVINO core, the compile settings and the cache folder."""

    def __init__(self, precision: Precision, threads: int, workers: int,
                 cache: Path | None) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.precision = precision
        self.config = ov_config(precision, threads, workers)
        self.cache = cache
        if cache is not None:
            self.core.set_property({"CACHE_DIR": str(cache / "openvino")})

    def compile(self, model: Any, shape: Shape | None = None) -> Compiled:
        """Compiles ``model``, made static at ``shape`` when one is given."""
        if shape is not None:
            model = model.clone()
            model.reshape({0: list(shape)})
        return Compiled(self.core.compile_model(model, "CPU", self.config))


class EngineBackbone(nn.Module):
    """Stands in for ``model.backbone``: the graph per image, eager for what it lacks.

    With the head on the engine too, the features it returns are empty tensors of the
    right height and width (the anchor generator reads only their sizes) and the head's
    outputs ride on the first of them to :class:`EngineHead`.
    """

    def __init__(self, eager: nn.Module, layout: Layout, graphs: Callable[[Shape], Any],
                 name: str) -> None:
        super().__init__()
        self.eager = eager
        self.layout = layout
        self.graphs = graphs  # shape -> Compiled, or None to run that shape eager
        self.name = name


    def forward(self, x: torch.Tensor) -> Any:
        """Same contract as the eager backbone (features as an ordered dict)."""
        graph = self.graphs(tuple(x[:1].shape))
        if graph is None:
            return self.eager(x)
        outputs = [graph(x[i:i + 1]) for i in range(x.shape[0])]
        joined = [torch.cat(parts) for parts in zip(*outputs, strict=True)]
        levels = len(self.layout.feature_keys)
        if self.layout.head_keys is None:
            features = OrderedDict(zip(self.layout.feature_keys, joined[:levels], strict=True))
            if self.layout.rpn:
                first = joined[0]
                first.engine_rpn = (  # type: ignore[attr-defined]
                    joined[levels:2 * levels], joined[2 * levels:3 * levels])
            return features
        heads = len(self.layout.head_keys)
        features = OrderedDict(
            (key, torch.empty((x.shape[0], 0, *level.shape[-2:]), dtype=x.dtype))
            for key, level in zip(self.layout.feature_keys, joined[heads:], strict=True))
        first = next(iter(features.values()))
        first.engine_head = OrderedDict(  # type: ignore[attr-defined]
            zip(self.layout.head_keys, joined[:heads], strict=True))
        return features


class EngineHead(nn.Module):
    """Stands in for ``model.head``: hands on what the engine computed, else runs eager."""

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.eager = eager

    def forward(self, features: list[torch.Tensor]) -> Any:
        """The head's outputs for these features."""
        done = getattr(features[0], "engine_head", None) if features else None
        return done if done is not None else self.eager(features)


class EngineRPNHead(nn.Module):
    """Stands in for ``model.rpn.head``: the engine's objectness and deltas, else eager."""

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.eager = eager

    def forward(self, features: list[torch.Tensor]) -> Any:
        """(objectness per level, box deltas per level) for these features."""
        done = getattr(features[0], "engine_rpn", None) if features else None
        return done if done is not None else self.eager(features)


def ov_version() -> str:
    """The OpenVINO version, or '' when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return ""
    return str(ov.get_version())


def cache_key(tag: str, dense: nn.Module, shape: Sequence[int], static: bool) -> str:
    """Names an exported graph: what would make a cached one wrong is in it."""
    return hashlib.sha256("|".join([
        "graph v3", torch.__version__, torchvision.__version__, ov_version(), tag,
        "static" if static else "dynamic", str(tuple(shape)), weights_digest(dense),
    ]).encode()).hexdigest()[:32]
