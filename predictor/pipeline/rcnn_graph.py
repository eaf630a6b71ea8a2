"""The R-CNN family's box head on the engine: one graph, dynamic in the number of regions.

After the backbone and the RPN head (exported with them, see :mod:`.ov_graph`), a Faster
R-CNN spends its time in ``roi_heads.box_head`` (two MLP layers, or four 3x3 convs and
one layer in the v2 models) and ``box_predictor``, run on every proposal: up to 1,000 per
picture. Profiled eager on ``fasterrcnn_resnet50_fpn_v2`` at 640x480 (one thread): backbone
45 %, RPN head 25 %, box head 25 %, RoIAlign 4 %, the rest (anchors, proposal NMS, box
decoding, final NMS) under 2 %. Box head and predictor are exported together with the
number of regions dynamic, so one compiled graph serves every picture; RoIAlign and the
rest stay eager, as torchvision wrote them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .ov_graph import Compiled

log = logging.getLogger(__name__)

# Regions in the example the box head is exported on (torch.export specialises a size of 1).
EXPORT_REGIONS = 8


class BoxHead(nn.Module):
    """What is exported: pooled region features -> (class logits, box regression)."""

    def __init__(self, box_head: nn.Module, box_predictor: nn.Module) -> None:
        super().__init__()
        self.box_head = box_head
        self.box_predictor = box_predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictor's outputs for ``N x C x 7 x 7`` region features."""
        logits, regression = self.box_predictor(self.box_head(x))
        return logits, regression


def parts(model: nn.Module) -> BoxHead | None:
    """The model's box head and predictor, or None when it has no RoI heads."""
    roi = getattr(model, "roi_heads", None)
    head = getattr(roi, "box_head", None)
    predictor = getattr(roi, "box_predictor", None)
    if isinstance(head, nn.Module) and isinstance(predictor, nn.Module):
        return BoxHead(head, predictor).eval()
    return None


def export(box: BoxHead, example: torch.Tensor) -> Any:
    """``torch.export`` with a dynamic region count, then ``openvino.convert_model``."""
    import openvino as ov

    regions = torch.rand(EXPORT_REGIONS, *example.shape[1:], dtype=example.dtype)
    program = torch.export.export(box, (regions,),
                                  dynamic_shapes={"x": {0: torch.export.Dim.AUTO}})
    return ov.convert_model(program, input=[[-1, *example.shape[1:]]])


class EngineBoxHead(nn.Module):
    """Stands in for ``roi_heads.box_head``: runs box head and predictor on the graph.

    The predictor's outputs ride to :class:`EngineBoxPredictor` on an empty ``N x 0``
    tensor, so nothing in between (torchvision's ``RoIHeads.forward``) changes.
    """

    def __init__(self, eager: BoxHead, graph: Compiled) -> None:
        super().__init__()
        self.eager = eager
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Region features in; a carrier of (logits, regression) out."""
        if not x.shape[0]:
            out: torch.Tensor = self.eager.box_head(x)
            return out
        logits, regression = self.graph(x)
        carrier = torch.empty((x.shape[0], 0), dtype=x.dtype)
        carrier.engine_box = (logits, regression)  # type: ignore[attr-defined]
        return carrier


class EngineBoxPredictor(nn.Module):
    """Stands in for ``roi_heads.box_predictor``: hands on the graph's outputs, else eager."""

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.eager = eager

    def forward(self, x: torch.Tensor) -> Any:
        """(class logits, box regression)."""
        done = getattr(x, "engine_box", None)
        return done if done is not None else self.eager(x)


def install(model: nn.Module, box: BoxHead, graph: Compiled) -> None:
    """Swaps the model's box head and predictor for the graph's stand-ins."""
    roi: Any = model.roi_heads
    roi.box_head = EngineBoxHead(box, graph)
    roi.box_predictor = EngineBoxPredictor(box.box_predictor)


def uninstall(model: nn.Module, box: BoxHead) -> None:
    """Puts the eager box head and predictor back."""
    roi: Any = model.roi_heads
    roi.box_head = box.box_head
    roi.box_predictor = box.box_predictor
