"""Folds each BatchNorm that directly follows a convolution into that convolution.

In eval mode a BatchNorm is a per-channel scale and shift, which the convolution's
weights and bias can absorb: one layer less to run per block, the same outputs (to
float rounding). torchvision's MobileNet/SSDlite blocks are ``Sequential``\\s of
conv -> BatchNorm -> activation, so walking the ``Sequential``\\s finds them all; the
model's structure is otherwise untouched (the README gives the measured gain).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(module: nn.Module) -> int:
    """Fuses conv+BN pairs inside every ``Sequential`` of an eval-mode module, in place.

    Returns the number of pairs fused. Scripted modules are left alone.
    """
    if isinstance(module, torch.jit.ScriptModule) or module.training:
        return 0
    fused = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[first], seq._modules[second]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d
                    and bn.track_running_stats and bn.running_mean is not None
                    and conv.out_channels == bn.num_features):
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = nn.Identity()
                fused += 1
    return fused
