"""What the client returns: detections, per-image results, health and metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "Detection",
    "Health",
    "ImageInput",
    "ImageResult",
    "ModelMetadata",
    "TensorSpec",
]

#: What ``detect`` accepts as one image: a file path, encoded file bytes (JPEG, PNG,
#: WebP...), a PIL image, or an ``H x W x 3`` uint8 RGB array.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, "Image.Image", "np.ndarray"]


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the image as sent (after EXIF rotation).
        score: Confidence between 0 and 1.
        label: Class name.
        label_id: Class id (0 is the background and never returned).
    """

    box: tuple[float, float, float, float]
    score: float
    label: str
    label_id: int

    def to_dict(self) -> dict[str, Any]:
        """The detection as the V1 wire format writes it."""
        return {"box": list(self.box), "score": self.score, "label": self.label,
                "label_id": self.label_id}


@dataclass(frozen=True)
class ImageResult:
    """The detections in one image, best score first.

    Attributes:
        detections: The detections.
        image_size: ``(height, width)`` of the image the boxes refer to.
        model_version: The version of the model that answered, as the server names it
            (V2's ``model_version``, V1's ``x-model-version`` header); None when the
            server sends none.
    """

    detections: tuple[Detection, ...]
    image_size: tuple[int, int]
    model_version: str | None = None

    def __len__(self) -> int:
        return len(self.detections)

    def to_dict(self) -> dict[str, Any]:
        """The result as the V1 wire format writes it."""
        return {"detections": [d.to_dict() for d in self.detections],
                "image_size": list(self.image_size)}


@dataclass(frozen=True)
class DetectOptions:
    """Per-request parameters; None leaves the server's default."""

    score_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[str | int, ...] | None = None

    def v1_parameters(self) -> dict[str, Any]:
        """As V1 JSON ``parameters``: ``classes`` is a list."""
        params: dict[str, Any] = {}
        if self.score_threshold is not None:
            params["score_threshold"] = float(self.score_threshold)
        if self.max_detections is not None:
            params["max_detections"] = int(self.max_detections)
        if self.classes is not None:
            params["classes"] = list(self.classes)
        return params

    def v2_parameters(self) -> dict[str, float | int | str]:
        """As V2 ``parameters``, which hold scalars only: ``classes`` is comma-joined."""
        params: dict[str, float | int | str] = {}
        if self.score_threshold is not None:
            params["score_threshold"] = float(self.score_threshold)
        if self.max_detections is not None:
            params["max_detections"] = int(self.max_detections)
        if self.classes is not None:
            params["classes"] = ",".join(str(c) for c in self.classes)
        return params


@dataclass(frozen=True)
class Health:
    """Whether the server is live and the model ready."""

    live: bool
    ready: bool

    def to_dict(self) -> dict[str, bool]:
        """The health as a plain dict."""
        return {"live": self.live, "ready": self.ready}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model; ``-1`` in ``shape`` is a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """What the server says about the model (Open Inference Protocol metadata)."""

    name: str
    platform: str
    versions: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        """The metadata in the Open Inference Protocol's JSON layout."""
        def specs(items: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in items]

        return {"name": self.name, "platform": self.platform, "versions": list(self.versions),
                "inputs": specs(self.inputs), "outputs": specs(self.outputs)}
