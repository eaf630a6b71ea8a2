"""Folding BatchNorm into convolutions changes speed, not answers."""

from __future__ import annotations

import copy

import torch
from torch import nn

from predictor.pipeline.bn_fold import fuse_conv_bn


def test_fused_detector_gives_the_same_detections() -> None:
    # The trained demo detector: random weights give near-tied scores whose order
    # float rounding may swap, which would hide a real difference.
    import numpy as np

    from demo.synthetic import make_sample
    from predictor.config import DEMO_MODEL_DIR, ModelConfig
    from predictor.pipeline.loader import load_model

    model = load_model(ModelConfig(model_dir=str(DEMO_MODEL_DIR))).module.eval()
    fused = copy.deepcopy(model)
    count = fuse_conv_bn(fused)
    assert count > 50  # every conv block of the MobileNet backbone and the SSDlite head
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    picture, _, _ = make_sample(5, size=(400, 300), min_objects=3, max_objects=3)
    image = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        a, b = model([image])[0], fused([image])[0]
    keep_a, keep_b = a["scores"] > 0.3, b["scores"] > 0.3
    assert int(keep_a.sum()) == int(keep_b.sum()) >= 3
    torch.testing.assert_close(a["boxes"][keep_a], b["boxes"][keep_b], atol=1e-2, rtol=0)
    torch.testing.assert_close(a["scores"][keep_a], b["scores"][keep_b], atol=1e-4, rtol=0)
    assert torch.equal(a["labels"][keep_a], b["labels"][keep_b])


def test_training_mode_and_lone_batchnorm_are_left_alone() -> None:
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert fuse_conv_bn(seq.train()) == 0
    assert isinstance(seq[1], nn.BatchNorm2d)
    mismatched = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    assert fuse_conv_bn(mismatched) == 0
