"""Loading and checking PuLID-FLUX weight files (pulid_flux_v0.9.0 / v0.9.1 .safetensors).

Sizes are read from the tensor shapes; then every key of the file must be exactly the layout the
model expects (no missing, no unexpected key, every shape equal), or the user gets an error that
names the file and what is wrong with it.
"""
from __future__ import annotations

import hashlib
import os
import re

import torch
from safetensors.torch import load_file

from ..errors import ModelFileError
from ..model_layout import describe_model, layout_problems
from ..safetensors_file import read_header
from .model import PulidConfig, PulidFlux

ENCODER_PREFIX = "pulid_encoder."
CA_PREFIX = "pulid_ca."


def _mlp_layout(prefix: str, in_dim: int, hidden: int, out_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.0.weight": (hidden, in_dim), f"{prefix}.0.bias": (hidden,),
        f"{prefix}.1.weight": (hidden,), f"{prefix}.1.bias": (hidden,),
        f"{prefix}.3.weight": (hidden, hidden), f"{prefix}.3.bias": (hidden,),
        f"{prefix}.4.weight": (hidden,), f"{prefix}.4.bias": (hidden,),
        f"{prefix}.6.weight": (out_dim, hidden), f"{prefix}.6.bias": (out_dim,),
    }


def expected_layout(cfg: PulidConfig) -> dict[str, tuple[int, ...]]:
    """Every key of a PuLID-FLUX file built with cfg, with its shape (pulid-spec section 1.1)."""
    d, e = cfg.encoder_dim, ENCODER_PREFIX
    layout = {f"{e}latents": (1, cfg.num_queries, d), f"{e}proj_out": (d, cfg.token_dim)}
    for i in range(cfg.encoder_depth):
        p = f"{e}layers.{i}"
        for norm in ("norm1", "norm2"):
            layout[f"{p}.0.{norm}.weight"] = layout[f"{p}.0.{norm}.bias"] = (d,)
        layout[f"{p}.0.to_q.weight"] = (d, d)
        layout[f"{p}.0.to_kv.weight"] = (2 * d, d)
        layout[f"{p}.0.to_out.weight"] = (d, d)
        layout[f"{p}.1.0.weight"] = layout[f"{p}.1.0.bias"] = (d,)
        layout[f"{p}.1.1.weight"] = (d * cfg.ff_mult, d)
        layout[f"{p}.1.3.weight"] = (d, d * cfg.ff_mult)
    for m in range(cfg.num_vit_scales):
        layout.update(_mlp_layout(f"{e}mapping_{m}", cfg.vit_dim, cfg.vit_mapping_dim, d))
    layout.update(_mlp_layout(f"{e}id_embedding_mapping", cfg.id_input_dim, cfg.id_mapping_dim,
                              d * cfg.num_id_tokens))
    for c in range(cfg.num_ca):
        p = f"{CA_PREFIX}{c}"
        layout[f"{p}.norm1.weight"] = layout[f"{p}.norm1.bias"] = (cfg.token_dim,)
        layout[f"{p}.norm2.weight"] = layout[f"{p}.norm2.bias"] = (cfg.flux_hidden,)
        layout[f"{p}.to_q.weight"] = (cfg.ca_inner_dim, cfg.flux_hidden)
        layout[f"{p}.to_kv.weight"] = (2 * cfg.ca_inner_dim, cfg.token_dim)
        layout[f"{p}.to_out.weight"] = (cfg.flux_hidden, cfg.ca_inner_dim)
    return layout


def _count(pattern: str, keys) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.fullmatch(k))})


def config_from_shapes(shapes: dict[str, tuple[int, ...]], name: str) -> PulidConfig:
    """Read every size of the model from the tensor shapes of a file."""
    keys = list(shapes)
    if not any(k.startswith(ENCODER_PREFIX) for k in keys) or not any(k.startswith(CA_PREFIX) for k in keys):
        raise ModelFileError(
            f"{name} is not a PuLID-FLUX weights file: it looks like {describe_model(keys)}. "
            f"Expected pulid_flux_v0.9.1.safetensors (keys 'pulid_encoder.*' and 'pulid_ca.*').")
    e = ENCODER_PREFIX
    def dims(key: str, ndim: int) -> tuple[int, ...]:
        shape = shapes.get(key)
        if shape is None or len(shape) != ndim or 0 in shape:
            found = "missing" if shape is None else f"of shape {list(shape)}"
            raise ModelFileError(f"{name} is an incomplete or damaged PuLID-FLUX file: tensor {key} is {found}, "
                                 f"expected {ndim} non-zero dimensions. Download it again.")
        return shape

    _, num_queries, encoder_dim = dims(f"{e}latents", 3)
    token_dim = dims(f"{e}proj_out", 2)[1]
    id_mapping_dim, id_input_dim = dims(f"{e}id_embedding_mapping.0.weight", 2)
    num_id_tokens = dims(f"{e}id_embedding_mapping.6.weight", 2)[0] // encoder_dim
    vit_mapping_dim, vit_dim = dims(f"{e}mapping_0.0.weight", 2)
    ff_mult = dims(f"{e}layers.0.1.1.weight", 2)[0] // encoder_dim
    ca_inner_dim, flux_hidden = dims(f"{CA_PREFIX}0.to_q.weight", 2)
    return PulidConfig(
        encoder_dim=encoder_dim,
        encoder_depth=_count(rf"{re.escape(e)}layers\.(\d+)\..*", keys),
        num_queries=num_queries,
        num_id_tokens=num_id_tokens,
        id_input_dim=id_input_dim,
        id_mapping_dim=id_mapping_dim,
        vit_dim=vit_dim,
        vit_mapping_dim=vit_mapping_dim,
        num_vit_scales=_count(rf"{re.escape(e)}mapping_(\d+)\..*", keys),
        ff_mult=ff_mult,
        token_dim=token_dim,
        flux_hidden=flux_hidden,
        ca_inner_dim=ca_inner_dim,
        num_ca=_count(rf"{re.escape(CA_PREFIX)}(\d+)\..*", keys),
    )


def check_layout(shapes: dict[str, tuple[int, ...]], cfg: PulidConfig, name: str) -> None:
    """Raise ModelFileError unless shapes is exactly expected_layout(cfg)."""
    problems = layout_problems(shapes, expected_layout(cfg))
    if cfg.encoder_depth % max(cfg.num_vit_scales, 1) or cfg.encoder_dim % 64 or cfg.ca_inner_dim % 128:
        problems.append(f"inconsistent sizes {cfg}")
    if problems:
        raise ModelFileError(f"{name} does not have the PuLID-FLUX layout: {'; '.join(problems)}. "
                             f"Use the official pulid_flux_v0.9.1.safetensors (or v0.9.0), unmodified.")


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """A short content hash of the IDFormer, so an identity can be checked against the model it meets."""
    h = hashlib.sha256()
    for key in (f"{ENCODER_PREFIX}latents", f"{ENCODER_PREFIX}proj_out"):
        h.update(state_dict[key].float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_pulid_flux(path: str, folder_hint: str = "models/pulid", ops=torch.nn) -> tuple[PulidFlux, str]:
    """Build the model from a file, checking everything; returns (model on CPU in the file's dtype, fingerprint).

    ops: layer namespace for the modules (see model.py)."""
    name = os.path.basename(path)
    header = read_header(path, folder_hint)
    shapes = {k: tuple(v["shape"]) for k, v in header.items()}
    cfg = config_from_shapes(shapes, name)
    check_layout(shapes, cfg, name)
    state_dict = load_file(path, device="cpu")
    dtypes = {t.dtype for t in state_dict.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ModelFileError(f"{name} mixes or uses non-float dtypes {sorted(map(str, dtypes))}; "
                             f"download the official file again.")
    with torch.device("meta"):
        model = PulidFlux(cfg, ops)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval().requires_grad_(False), weights_fingerprint(state_dict)
