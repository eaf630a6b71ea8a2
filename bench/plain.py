"""The baseline: a detector served the plain, documented KServe way.

A ``kserve.Model`` subclass with a synchronous ``predict``: each V1 instance is
base64-decoded, opened with PIL and run through the model on its own, one request at
a time, on the server's event loop. This is what KServe's custom-predictor guide
leads to; the benchmark compares this project's predictor against it. The model is
built by the project's loader so both servers run exactly the same network with the
same internal score cut.

Run on its own::

    python -m bench.plain --model_dir predictor/demo/model --http_port 8090
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from collections.abc import Sequence
from typing import Any

import kserve
import numpy as np
import torch
from kserve import ModelServer, model_server
from PIL import Image

from predictor.config import ModelConfig
from predictor.pipeline.engine import pick_device
from predictor.pipeline.loader import load_model


class PlainDetector(kserve.Model):  # type: ignore[misc]
    """Sync ``predict``, PIL decode, one image after another."""

    def __init__(self, name: str, model_dir: str, device: str = "auto", fp16: bool = False,
                 score_threshold: float = 0.5) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.device = pick_device(device)
        self.fp16 = fp16 and self.device.type == "cuda"
        self.score_threshold = score_threshold
        self.model: torch.nn.Module | None = None
        self.labels: list[str] = []

    def load(self) -> bool:
        """Builds the model and loads its weights."""
        loaded = load_model(ModelConfig(model_dir=self.model_dir))
        self.model = loaded.module.eval().to(self.device)
        self.labels = loaded.labels
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None
                ) -> dict[str, Any]:
        """V1 ``{"instances": [{"image_bytes": {"b64": ...}}]}`` in, V1 predictions out."""
        assert self.model is not None
        predictions = []
        for instance in payload["instances"]:
            data = instance.get("image_bytes", instance.get("image", instance))["b64"]
            image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
            pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            tensor = pixels.to(self.device).float().div_(255.0)
            with torch.inference_mode(), torch.autocast("cuda", enabled=self.fp16):
                out = self.model([tensor])[0]
            keep = out["scores"] >= self.score_threshold
            boxes = out["boxes"][keep].float().cpu().tolist()
            scores = out["scores"][keep].float().cpu().tolist()
            ids = out["labels"][keep].cpu().tolist()
            predictions.append({
                "detections": [
                    {"box": [round(v, 2) for v in box], "score": round(score, 4),
                     "label": self.labels[i] if i < len(self.labels) else str(i),
                     "label_id": i}
                    for box, score, i in zip(boxes, scores, ids, strict=True)
                ],
                "image_size": [image.height, image.width],
            })
        return {"predictions": predictions}


def main(argv: Sequence[str] | None = None) -> int:
    """Loads the model and serves it with KServe's ModelServer."""
    parser = argparse.ArgumentParser(parents=[model_server.parser],
                                     description="Plain KServe detector (benchmark baseline)")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args(argv)
    model = PlainDetector(args.model_name, args.model_dir, args.device, args.fp16)
    model.load()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
