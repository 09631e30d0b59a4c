"""Folding inference BatchNorm layers into the convolutions that feed them (RetinaFace, BiSeNet).

In eval mode a BatchNorm2d is a per-channel scale and shift, so `bn(conv(x))` equals one convolution with
scaled weights and a bias: the same result up to float rounding (the fold is computed in float64), without
the BatchNorm pass over every activation and its fresh output buffer. At 1024 px RetinaFace's activations
are tens of MiB each; every fresh buffer of that size is memory the kernel has to fault in again (see the
encode benchmark's page-fault column), so the networks also apply their activations in place.

Pairs are found by the names the facexlib weight files use: `bnN` follows `convN`, `bn_atten` follows
`conv_atten`, and in an `nn.Sequential` the BatchNorm follows its convolution.
"""
from __future__ import annotations

import torch
from torch import nn


def _partner_name(bn_name: str) -> str:
    return str(int(bn_name) - 1) if bn_name.isdigit() else bn_name.replace("bn", "conv", 1)


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d of `model` (in eval mode) into its convolution and replace it by Identity.
    Returns the model, changed in place. ValueError when a BatchNorm has no convolution partner."""
    for parent_name, parent in list(model.named_modules()):
        for name, bn in list(parent.named_children()):
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            conv = getattr(parent, _partner_name(name), None)
            if not isinstance(conv, nn.Conv2d) or conv.out_channels != bn.num_features:
                raise ValueError(f"{parent_name}.{name}: no convolution with {bn.num_features} outputs before it")
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            shift = bn.bias.double() - bn.running_mean.double() * scale
            bias = shift if conv.bias is None else conv.bias.double() * scale + shift
            dtype = conv.weight.dtype
            conv.weight = nn.Parameter((conv.weight.double() * scale[:, None, None, None]).to(dtype),
                                       requires_grad=False)
            conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
            setattr(parent, name, nn.Identity())
    return model
