"""int8 on the CPU engine: the dense graph quantized with NNCF on the user's own pictures.

Opt-in (``--cpu_precision int8`` with ``--calibration_dir``); the quantized graph is
cached beside the others, keyed by the fp32 graph's key and the calibration pictures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import precision as prec


def calibration_digest(pictures: Sequence[np.ndarray]) -> str:
    """Names a set of pictures in cache keys (16 hex digits of their pixels' SHA-256)."""
    digest = hashlib.sha256()
    for pic in pictures:
        digest.update(np.ascontiguousarray(pic).tobytes())
    return digest.hexdigest()[:16]


def model_inputs(model: nn.Module, pictures: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What the backbone sees for each picture (the transform's output), for calibration."""
    out = []
    with torch.inference_mode():
        for pic in pictures:
            tensor = torch.from_numpy(np.array(pic)).permute(2, 0, 1).float() / 255
            transform: Any = model.transform
            out.append(transform([tensor])[0].tensors.numpy())
    return out


def quantized(model: nn.Module, graph: Any, check_dir: str | None, folder: Path | None,
              key: str, refused: list[str]) -> Any:
    """The int8 graph calibrated on ``--calibration_dir``, or None (reason in ``refused``)."""
    import openvino as ov

    pictures = prec.pictures(check_dir, prec.MAX_CALIBRATION)
    if not pictures:
        refused.append("int8 refused: it needs --calibration_dir with pictures to calibrate on")
        return None
    path = None
    if folder is not None:
        key += calibration_digest(pictures)
        path = folder / f"dense-int8-{hashlib.sha256(key.encode()).hexdigest()[:32]}.xml"
        if path.is_file():
            return ov.Core().read_model(str(path))
    try:
        quantized = prec.quantize(graph, model_inputs(model, pictures))
    except ImportError:
        refused.append("int8 refused: NNCF is not installed (pip install 'kserve-detector[int8]')")
        return None
    if path is not None:
        ov.save_model(quantized, str(path), compress_to_fp16=False)
    return quantized
