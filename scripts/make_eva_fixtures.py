"""Regenerate tests/fixtures/eva_tiny_reference.safetensors with the OFFICIAL EVA02-CLIP code.

    python scripts/make_eva_fixtures.py --reference /path/to/ToTheBeginning/PuLID

Builds the official EVA02-CLIP-L-14-336 visual tower (the reference checkout's `eva_clip` package,
its EVA02-CLIP-L-14-336.json flags: rope, intp_freq, pt_hw_seq_len 16, subln, naiveswiglu, qkv_bias,
no postnorm; xattn off) at a tiny size, fills it with weights from `fixture_state_dict` (a seeded
generator that does not depend on the torch version, so the test rebuilds the same weights without
storing them), runs it on a fixed input and stores the input, the head output and the 5 hidden states.

The reference package needs timm, torchvision and einops; timm and torchvision are stubbed here when
absent (only helpers for weight initialisation and unused modules are taken from them). Nothing from
the reference checkout is copied into the fixture except numbers it computed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "eva_tiny_reference.safetensors")

SEED = 20240917
BATCH = 2
# 21 blocks is the fewest that has all 5 hidden states (inputs of blocks 4..20); head width 64 as in
# the real model, so 2 heads and the real RoPE dims (32 per axis); a 3x3 patch grid exercises the
# interpolated RoPE frequencies (3 positions scaled onto the 16-wide pre-training grid).
TINY = dict(width=128, layers=21, mlp_ratio=2.6667, patch_size=14, image_size=42, embed_dim=32)

_NORM_WEIGHT = re.compile(r"(^|\.)(norm1|norm2|norm|inner_attn_ln|ffn_ln)\.weight$")


def uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """n floats in [-1, 1) from PCG64's raw bit stream (stable across numpy versions, unlike its
    distribution methods)."""
    raw = np.random.PCG64([seed, stream]).random_raw(n)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0 ** -52 - 1.0


def fixture_state_dict(layout: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """Deterministic fp32 weights for a layout: LayerNorm scales near 1, biases and embeddings of
    moderate size, matrices scaled by fan-in so activations stay O(1) through every block."""
    out = {}
    for stream, (key, shape) in enumerate(sorted(layout.items())):
        u = uniform(seed, stream, math.prod(shape)).reshape(shape)
        if _NORM_WEIGHT.search(key):
            value = 1.0 + 0.2 * u
        elif key.endswith("bias"):
            value = 0.2 * u
        elif key in ("cls_token", "pos_embed"):
            value = 0.5 * u
        else:
            value = u * math.sqrt(3.0 / math.prod(shape[1:]))
        out[key] = torch.from_numpy(value.astype(np.float32))
    return out


def fixture_input(seed: int = SEED) -> torch.Tensor:
    """A normalised-looking image batch [BATCH, 3, S, S] in [-2, 2)."""
    s = TINY["image_size"]
    return torch.from_numpy((2.0 * uniform(seed, 1_000_000, BATCH * 3 * s * s)).astype(np.float32)).reshape(BATCH, 3, s, s)


def _stub_missing_packages() -> None:
    """Minimal stand-ins for timm and torchvision: the EVA tower only uses timm's init helpers
    (overwritten by our weights) and drop_path (0 at inference); torchvision only feeds modules the
    vision tower does not use."""
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        layers = types.ModuleType("timm.models.layers")
        layers.drop_path = lambda x, drop_prob=0.0, training=False: x
        layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
        layers.trunc_normal_ = lambda tensor, **kwargs: tensor
        models = types.ModuleType("timm.models")
        models.layers = layers
        timm = types.ModuleType("timm")
        timm.models = models
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    try:
        import torchvision.ops.misc  # noqa: F401
    except ImportError:
        misc = types.ModuleType("torchvision.ops.misc")
        misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
        ops = types.ModuleType("torchvision.ops")
        ops.misc = misc
        tv = types.ModuleType("torchvision")
        tv.ops = ops
        sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.misc": misc})


def build_reference(reference: str) -> tuple[torch.nn.Module, dict]:
    """The official visual tower at the tiny size, and the vision config it was built from."""
    package_dir = os.path.join(reference, "eva_clip")
    if not os.path.isdir(package_dir):
        sys.exit(f"{package_dir} not found: --reference must be a ToTheBeginning/PuLID checkout")
    _stub_missing_packages()
    # Import the package's modules without its __init__ (which pulls in the tokenizer and its deps).
    package = types.ModuleType("eva_clip")
    package.__path__ = [package_dir]
    sys.modules["eva_clip"] = package
    os.environ["RoPE"] = "1"  # as the official loader sets it for rope models
    from eva_clip.model import _build_vision_tower

    with open(os.path.join(package_dir, "model_configs", "EVA02-CLIP-L-14-336.json")) as f:
        official = json.load(f)
    vision_cfg = dict(official["vision_cfg"])
    vision_cfg.update(layers=TINY["layers"], width=TINY["width"], image_size=TINY["image_size"],
                      mlp_ratio=TINY["mlp_ratio"], patch_size=TINY["patch_size"], xattn=False)
    assert vision_cfg["rope"] and vision_cfg["subln"] and vision_cfg["naiveswiglu"] and vision_cfg["intp_freq"]
    model = _build_vision_tower(embed_dim=TINY["embed_dim"], vision_cfg=vision_cfg)
    return model.float().eval(), vision_cfg


def _git_commit(path: str) -> str:
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="path of a ToTheBeginning/PuLID checkout")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()

    sys.path.insert(0, REPO)
    from safetensors.torch import save_file

    from face_migration.face.eva_clip import EvaVisionTower, config_from_shapes, expected_layout

    reference, vision_cfg = build_reference(args.reference)
    ref_keys = {k: tuple(v.shape) for k, v in reference.state_dict().items() if "freqs_" not in k}
    cfg = config_from_shapes(ref_keys, "reference")
    if ref_keys != expected_layout(cfg):
        sys.exit(f"our layout differs from the reference: {sorted(set(ref_keys) ^ set(expected_layout(cfg)))[:5]}")
    weights = fixture_state_dict(expected_layout(cfg))
    missing, unexpected = reference.load_state_dict(weights, strict=False)
    assert not unexpected and all("freqs_" in k for k in missing), (missing, unexpected)

    x = fixture_input()
    with torch.no_grad():
        head, hidden = reference(x, return_all_features=False, return_hidden=True, shuffle=False)
        ours = EvaVisionTower(cfg)
        ours.load_state_dict(weights, strict=True)
        our_head, our_hidden = ours(x)
    assert len(hidden) == 5
    tensors = {"input": x, "head": head.contiguous()}
    tensors.update({f"hidden.{i}": h.contiguous() for i, h in enumerate(hidden)})
    meta = {"seed": str(SEED), "tiny": json.dumps(TINY), "vision_cfg": json.dumps(vision_cfg),
            "reference_commit": _git_commit(args.reference), "torch": torch.__version__}
    save_file(tensors, args.out, metadata=meta)
    for label, ref, got in [("head", head, our_head)] + [(f"hidden.{i}", h, g) for i, (h, g) in
                                                           enumerate(zip(hidden, our_hidden))]:
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        print(f"{label:9s} {tuple(ref.shape)}  max|ours-ref|/max|ref| = {rel:.2e}")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
