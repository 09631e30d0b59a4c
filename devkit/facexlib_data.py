"""Seeded weights and inputs shared by the facexlib parity fixtures and the tests that read them.

`scripts/make_facexlib_fixtures.py` builds facexlib's RetinaFace (resnet50) and BiSeNet, fills them
with these weights (from their own state-dict keys and shapes), runs them on these inputs and stores
the outputs in tests/fixtures/. The tests fill our networks from our own keys and shapes, which must
be the same, so they get the same weights. Values come from parity_data.uniform (PCG64 raw bits),
the same whatever torch or numpy version runs.
"""
from __future__ import annotations

import numpy as np
import torch

from devkit.parity_data import uniform

SEED = 20241107
FIXTURES = "tests/fixtures"
RETINAFACE_FIXTURE = "retinaface_parity.safetensors"
BISENET_FIXTURE = "bisenet_parity.safetensors"

RETINAFACE_IMAGE_HW = (100, 132)  # not multiples of 32, and not square: exercises ceil() in the priors
BISENET_INPUT_HW = (64, 80)
BISENET_MAIN_STRIDE = 2  # fixtures keep every 2nd pixel of the main logits, every 4th of the aux ones
BISENET_AUX_STRIDE = 4

def _value(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Weights that keep activations of order one through a deep ResNet; BatchNorm running statistics
    away from (0, 1) so that a missing or misplaced BatchNorm shows."""
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.zeros((), dtype=torch.long)
    u = uniform(key, shape, seed)
    if len(shape) == 4:  # convolution: variance 1 / fan-in (He's gain of 2 makes ResNet50 explode)
        # RetinaFace's class head smaller still, so face scores stay distinct (no ties at 1.0 in NMS).
        return u * (3.0 / int(np.prod(shape[1:]))) ** 0.5 * (0.25 if key.startswith("ClassHead.") else 1.0)
    if name == "running_var":
        return 1.0 + 0.5 * u
    if name == "running_mean":
        return 0.2 * u
    if name == "weight":  # BatchNorm scale
        return 0.8 + 0.3 * u
    return 0.1 * u  # biases


def state_dict_for(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, torch.Tensor]:
    return {k: _value(k, tuple(s), seed).contiguous() for k, s in sorted(shapes.items())}


def retinaface_image(seed: int = SEED) -> np.ndarray:
    """(H, W, 3) RGB uint8: a smooth gradient plus noise, so both flat and busy regions appear."""
    h, w = RETINAFACE_IMAGE_HW
    noise = uniform("in.retinaface_image", (h, w, 3), seed).numpy()
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None] * np.array([1.0, -0.5, 0.8])
    return np.clip(base + 50 * noise, 0, 255).astype(np.uint8)


def bisenet_input(seed: int = SEED) -> torch.Tensor:
    """(1, 3, H, W) RGB in [0, 1]."""
    h, w = BISENET_INPUT_HW
    return (uniform("in.bisenet_image", (1, 3, h, w), seed) + 1.0) / 2.0
