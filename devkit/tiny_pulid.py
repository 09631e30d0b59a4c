"""Tiny random PuLID-FLUX weight files with the real key layout, for unit and integration tests.

The layout comes from `expected_layout(cfg)`, so any change there is followed here; the values are
random but seeded, so files are reproducible."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from face_migration.pulid.model import PulidConfig
from face_migration.pulid.weights import expected_layout

# Matches make_tiny_flux.py's `compat` preset (hidden 3072, 1 double + 1 single block -> 2 CA modules)
# while keeping the IDFormer and CA widths small (the file is ~22 MB in fp32).
TINY_CFG_FOR_COMPAT_FLUX = PulidConfig(
    encoder_dim=128, encoder_depth=10, num_queries=32, num_id_tokens=5, id_input_dim=1280,
    id_mapping_dim=64, vit_dim=1024, vit_mapping_dim=64, num_vit_scales=5, ff_mult=4,
    token_dim=256, flux_hidden=3072, ca_inner_dim=256, num_ca=2,
)


def _is_norm_weight(key: str) -> bool:
    # LayerNorm scales: CA norm1/norm2, IDFormer norm1/norm2 and the feed-forward's first LayerNorm
    # (layers.N.1.0), and the mapping MLPs' LayerNorms (indices 1 and 4).
    if not key.endswith(".weight"):
        return False
    stem = key[: -len(".weight")]
    if stem.endswith((".norm1", ".norm2")):
        return True
    if ".layers." in stem:
        return stem.endswith(".1.0")
    return "mapping" in stem and stem.rsplit(".", 1)[1] in ("1", "4")


def make_tiny_pulid_state_dict(cfg: PulidConfig = TINY_CFG_FOR_COMPAT_FLUX, seed: int = 0,
                               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random weights for every key of expected_layout(cfg): N(0, 0.02), LayerNorm scales ~1, small biases."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in sorted(expected_layout(cfg).items()):
        noise = torch.randn(shape, generator=gen)
        if _is_norm_weight(key):
            value = 1.0 + 0.02 * noise
        elif key.endswith(".bias"):
            value = 0.01 * noise
        else:
            value = 0.02 * noise
        state[key] = value.to(dtype).contiguous()
    return state


def write_tiny_pulid(path, cfg: PulidConfig = TINY_CFG_FOR_COMPAT_FLUX, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> str:
    """Write a tiny PuLID-FLUX .safetensors file; returns its path as a string."""
    save_file(make_tiny_pulid_state_dict(cfg, seed, dtype), str(path))
    return str(path)
