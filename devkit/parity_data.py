"""Sizes, seeded weights and inputs shared by the parity fixtures and the tests that read them.

`scripts/make_pulid_fixtures.py` runs the official PuLID code on these weights and stores the outputs
in tests/fixtures/; the tests rebuild the same weights here and run ours. The values come from numpy's
PCG64 raw output (a fixed, documented bit stream), not from torch's or numpy's distribution code,
so the weights are the same whatever torch or numpy version a machine has.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from safetensors import safe_open
from safetensors.torch import load_file

from face_migration.pulid.model import PulidConfig

SEED = 20240917
FIXTURES = "tests/fixtures"
PULID_FIXTURE = "pulid_parity.safetensors"  # IDFormer (cond + uncond) and one CA module
FLUX_FIXTURE = "flux_pulid_parity.safetensors"  # tiny FLUX with and without the injection

# The smallest IDFormer the official constructor accepts with our head width (64): 2 heads, one layer
# pair per ViT scale (depth must be a multiple of 5). Its mapping MLPs are fixed by the official code
# at 1280 -> 1024 and 1024 -> 1024, which makes this tiny model ~14 M parameters all the same.
PULID_CFG = PulidConfig(
    encoder_dim=128, encoder_depth=5, num_queries=4, num_id_tokens=2, id_input_dim=1280,
    id_mapping_dim=1024, vit_dim=1024, vit_mapping_dim=1024, num_vit_scales=5, ff_mult=4,
    token_dim=64, flux_hidden=256, ca_inner_dim=256, num_ca=4,
)
VIT_TOKENS = 2  # EVA hidden-state length in the fixture (577 in real use)
BATCH = 2

# Tiny FLUX: hidden 256 = 2 heads x 128 (the real head width, so the real RoPE axes fit),
# 4 double + 8 single blocks -> CA after double 0, 2 and single 0, 4 (4 modules = PULID_CFG.num_ca).
FLUX_PARAMS = dict(
    in_channels=16, vec_in_dim=32, context_in_dim=48, hidden_size=256, mlp_ratio=4.0, num_heads=2,
    depth=4, depth_single_blocks=8, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True,
)
LATENT_HW = (8, 6)  # 4 x 3 token grid: not square, to catch a transposed grid
TEXT_TOKENS = 5
ID_WEIGHT = 0.8
TIMESTEPS = (0.9, 0.6)  # one per latent
GUIDANCE = 3.5


def uniform(key: str, shape, seed: int = SEED) -> torch.Tensor:
    """Values in [-1, 1), float32, from PCG64 seeded by (seed, crc32(key)): independent of key order."""
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(key.encode())])).random_raw(n)
    unit = (raw >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return torch.from_numpy((2.0 * unit - 1.0).astype(np.float32)).reshape(tuple(shape))


def _scaled(key: str, shape, seed: int) -> torch.Tensor:
    """Weights that keep activations of order one: fan-in scaled matrices, norm scales near 1."""
    u = uniform(key, shape, seed)
    name = key.rsplit(".", 1)[-1]
    if len(shape) == 2 and name != "proj_out":
        return u * (3.0 / shape[1]) ** 0.5
    if name == "proj_out":
        return u * (3.0 / shape[0]) ** 0.5
    if name == "latents":
        return u
    if name == "bias":
        return 0.1 * u
    return 1.0 + 0.1 * u  # LayerNorm weights, RMSNorm scales


def flux_layout(p: dict = FLUX_PARAMS) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a FLUX.1 checkpoint with these parameters, in the official names (as FLUX.1 files
    store them: RMSNorm `.scale`), so that any ComfyUI version loads it through its own file loading."""
    h, mlp, head = p["hidden_size"], int(p["hidden_size"] * p["mlp_ratio"]), p["hidden_size"] // p["num_heads"]

    def linear(name, out_dim, in_dim):
        return {f"{name}.weight": (out_dim, in_dim), f"{name}.bias": (out_dim,)}

    def qk_norm(name):
        return {f"{name}.query_norm.scale": (head,), f"{name}.key_norm.scale": (head,)}
    layout = {**linear("img_in", h, p["in_channels"] * 4), **linear("txt_in", h, p["context_in_dim"])}
    for name, in_dim in (("time_in", 256), ("vector_in", p["vec_in_dim"]), ("guidance_in", 256)):
        layout |= {**linear(f"{name}.in_layer", h, in_dim), **linear(f"{name}.out_layer", h, h)}
    for i in range(p["depth"]):
        for stream in ("img", "txt"):
            b = f"double_blocks.{i}.{stream}"
            layout |= {**linear(f"{b}_mod.lin", 6 * h, h), **linear(f"{b}_attn.qkv", 3 * h, h),
                       **qk_norm(f"{b}_attn.norm"), **linear(f"{b}_attn.proj", h, h),
                       **linear(f"{b}_mlp.0", mlp, h), **linear(f"{b}_mlp.2", h, mlp)}
    for i in range(p["depth_single_blocks"]):
        b = f"single_blocks.{i}"
        layout |= {**linear(f"{b}.linear1", 3 * h + mlp, h), **linear(f"{b}.linear2", h, h + mlp),
                   **qk_norm(f"{b}.norm"), **linear(f"{b}.modulation.lin", 3 * h, h)}
    return layout | linear("final_layer.linear", 4 * p["in_channels"], h) | linear(
        "final_layer.adaLN_modulation.1", 2 * h, h)


def state_dict_for(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """Seeded weights for every key of a layout (PuLID or FLUX: both use the names handled above)."""
    return {k: _scaled(k, tuple(s), seed).contiguous() for k, s in sorted(shapes.items())}


def checksum(state_dict: dict[str, torch.Tensor]) -> float:
    """One number per weight set, stored with the fixture, so a changed generator fails loudly."""
    return float(sum(t.double().abs().sum() for t in state_dict.values()))


def pulid_inputs(seed: int = SEED) -> dict[str, torch.Tensor]:
    """IDFormer inputs (ArcFace+EVA vector, 5 EVA hidden states) and CA inputs (ID tokens, image tokens)."""
    c = PULID_CFG
    out = {"id_vector": uniform("in.id_vector", (BATCH, c.id_input_dim), seed) * 2.0}
    for i in range(c.num_vit_scales):
        out[f"vit_hidden.{i}"] = uniform(f"in.vit_hidden.{i}", (BATCH, VIT_TOKENS, c.vit_dim), seed) * 3.0
    out["ca_id_tokens"] = uniform("in.ca_id_tokens", (BATCH, c.num_queries, c.token_dim), seed) * 2.0
    out["ca_img"] = uniform("in.ca_img", (BATCH, 7, c.flux_hidden), seed) * 2.0
    return out


def flux_inputs(seed: int = SEED) -> dict[str, torch.Tensor]:
    """ComfyUI-style FLUX inputs for BATCH latents: positive and negative text, pooled vectors."""
    p = FLUX_PARAMS
    h, w = LATENT_HW
    return {
        "x": uniform("in.x", (BATCH, p["in_channels"], h, w), seed) * 1.5,
        "context_pos": uniform("in.context_pos", (BATCH, TEXT_TOKENS, p["context_in_dim"]), seed),
        "context_neg": uniform("in.context_neg", (BATCH, TEXT_TOKENS, p["context_in_dim"]), seed),
        "y_pos": uniform("in.y_pos", (BATCH, p["vec_in_dim"]), seed),
        "y_neg": uniform("in.y_neg", (BATCH, p["vec_in_dim"]), seed),
    }


def load_fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a fixture file in tests/fixtures."""
    path = str(Path(__file__).resolve().parents[1] / FIXTURES / name)  # whatever the working directory
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    return load_file(path), meta
