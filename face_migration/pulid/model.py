"""PuLID-FLUX networks: the IDFormer (face embeddings -> ID tokens) and the cross-attention
modules that FLUX image tokens use to read those tokens.

Written from the specification (shared research, pulid-spec sections 1-3). Every size comes from a
`PulidConfig`, which `weights.config_from_shapes` reads off a weights file, so a tiny file with the
real key layout builds a tiny model. Layers come from an `ops` namespace (torch.nn by default) so the
ComfyUI adapter can build them from comfy.ops, whose layers compute in the activations' dtype and
support ComfyUI's partial (low-VRAM) loading.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Head widths are not visible in the weight shapes; the official model fixes them.
ENCODER_HEAD_DIM = 64
CA_HEAD_DIM = 128
# The official model inserts one CA module after every 2nd double block and every 4th single block.
DOUBLE_BLOCK_INTERVAL = 2
SINGLE_BLOCK_INTERVAL = 4


@dataclass(frozen=True)
class PulidConfig:
    encoder_dim: int = 1024  # IDFormer width
    encoder_depth: int = 10  # attention + feed-forward layer pairs
    num_queries: int = 32  # ID tokens produced per identity
    num_id_tokens: int = 5  # tokens made from the ArcFace+EVA vector
    id_input_dim: int = 1280  # ArcFace (512) + EVA CLS (768)
    id_mapping_dim: int = 1024  # hidden width of the id_embedding_mapping MLP
    vit_dim: int = 1024  # EVA hidden-state width fed to mapping_i
    vit_mapping_dim: int = 1024  # hidden width of mapping_i
    num_vit_scales: int = 5  # mapping_0..mapping_4: EVA hidden states used
    ff_mult: int = 4
    token_dim: int = 2048  # width of an ID token (proj_out columns, CA kv_dim)
    flux_hidden: int = 3072  # FLUX hidden size (CA query width)
    ca_inner_dim: int = 2048  # CA attention width
    num_ca: int = 20

    @property
    def encoder_heads(self) -> int:
        return self.encoder_dim // ENCODER_HEAD_DIM

    @property
    def ca_heads(self) -> int:
        return self.ca_inner_dim // CA_HEAD_DIM


def ca_block_placement(num_double: int, num_single: int) -> tuple[list[int], list[int]]:
    """Block indices followed by a CA module: (double blocks, single blocks), in CA-module order."""
    doubles = list(range(0, num_double, DOUBLE_BLOCK_INTERVAL))
    singles = list(range(0, num_single, SINGLE_BLOCK_INTERVAL))
    return doubles, singles


def _mlp(ops, in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    # Linear -> LN -> LeakyReLU -> Linear -> LN -> LeakyReLU -> Linear (indices match the file's keys)
    return nn.Sequential(
        ops.Linear(in_dim, hidden), ops.LayerNorm(hidden), nn.LeakyReLU(),
        ops.Linear(hidden, hidden), ops.LayerNorm(hidden), nn.LeakyReLU(),
        ops.Linear(hidden, out_dim),
    )


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention over [B, L, heads*d] tensors, returning [B, Lq, heads*d]."""
    b, lq, _ = q.shape
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, -1)


class PerceiverAttention(nn.Module):
    """Queries from `latents`, keys/values from `context`, plus the latents themselves when
    `attend_to_latents` (the IDFormer's layers; the FLUX cross-attention modules attend to the ID tokens only).
    norm1 normalises the context, norm2 the latents, as in the weight files."""

    def __init__(self, query_dim: int, context_dim: int, inner_dim: int, heads: int, attend_to_latents: bool,
                 ops=nn):
        super().__init__()
        self.heads = heads
        self.attend_to_latents = attend_to_latents
        self.norm1 = ops.LayerNorm(context_dim)
        self.norm2 = ops.LayerNorm(query_dim)
        self.to_q = ops.Linear(query_dim, inner_dim, bias=False)
        self.to_kv = ops.Linear(context_dim, inner_dim * 2, bias=False)
        self.to_out = ops.Linear(inner_dim, query_dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        kv_input = torch.cat([context, latents], dim=1) if self.attend_to_latents else context
        k, v = self.to_kv(kv_input).chunk(2, dim=-1)
        return self.to_out(_attention(self.to_q(latents), k, v, self.heads))


class IDFormer(nn.Module):
    """Perceiver resampler: ArcFace+EVA vector and five EVA hidden states -> ID tokens."""

    def __init__(self, cfg: PulidConfig, ops=nn):
        super().__init__()
        self.cfg = cfg
        d = cfg.encoder_dim
        self.latents = nn.Parameter(torch.zeros(1, cfg.num_queries, d))
        self.proj_out = nn.Parameter(torch.zeros(d, cfg.token_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PerceiverAttention(d, d, d, cfg.encoder_heads, attend_to_latents=True, ops=ops),
                nn.Sequential(ops.LayerNorm(d), ops.Linear(d, d * cfg.ff_mult, bias=False), nn.GELU(),
                              ops.Linear(d * cfg.ff_mult, d, bias=False)),
            ])
            for _ in range(cfg.encoder_depth)
        )
        for i in range(cfg.num_vit_scales):
            setattr(self, f"mapping_{i}", _mlp(ops, cfg.vit_dim, cfg.vit_mapping_dim, d))
        self.id_embedding_mapping = _mlp(ops, cfg.id_input_dim, cfg.id_mapping_dim, d * cfg.num_id_tokens)

    def forward(self, id_vector: torch.Tensor, vit_hidden: list[torch.Tensor]) -> torch.Tensor:
        """id_vector [B, 1280] (or [B, N, 1280]); vit_hidden: num_vit_scales x [B, 577, 1024]."""
        cfg = self.cfg
        b = id_vector.shape[0]
        id_tokens = self.id_embedding_mapping(id_vector).reshape(b, -1, cfg.encoder_dim)
        latents = torch.cat([self.latents.to(id_tokens).expand(b, -1, -1), id_tokens], dim=1)
        per_scale = cfg.encoder_depth // cfg.num_vit_scales
        for i, hidden in enumerate(vit_hidden):
            context = torch.cat([id_tokens, getattr(self, f"mapping_{i}")(hidden)], dim=1)
            for attn, ff in self.layers[i * per_scale:(i + 1) * per_scale]:
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, :cfg.num_queries] @ self.proj_out.to(latents)


# fp8 storage cannot be computed in by the IDFormer and does not exist on MPS: such files are widened once
# at load time, to bf16 (the official file's dtype).
FP8_CAST_TO = torch.bfloat16


def widen_fp8(model: nn.Module) -> bool:
    """Cast fp8-stored floating-point weights to FP8_CAST_TO in place; whether anything was cast."""
    fp8 = [t for t in model.parameters() if t.is_floating_point() and t.element_size() == 1]
    for t in fp8:
        t.data = t.data.to(FP8_CAST_TO)
    return bool(fp8)


class PulidFlux(nn.Module):
    """Both halves of a PuLID-FLUX weights file: `pulid_encoder` and `pulid_ca`."""

    def __init__(self, cfg: PulidConfig, ops=nn):
        super().__init__()
        self.cfg = cfg
        self.pulid_encoder = IDFormer(cfg, ops)
        self.pulid_ca = nn.ModuleList(
            PerceiverAttention(cfg.flux_hidden, cfg.token_dim, cfg.ca_inner_dim, cfg.ca_heads,
                               attend_to_latents=False, ops=ops)
            for _ in range(cfg.num_ca)
        )
        self._uncond_cache: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, id_vector: torch.Tensor, vit_hidden: list[torch.Tensor],
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) ID tokens, computed in `dtype` (default: the weights' dtype) on the weights' device."""
        p = self.pulid_encoder.latents
        id_vector = id_vector.to(p.device, dtype or p.dtype)
        vit_hidden = [h.to(p.device, dtype or p.dtype) for h in vit_hidden]
        cond = self.pulid_encoder(id_vector, vit_hidden)
        return cond, self._uncond(id_vector[:1], [h[:1] for h in vit_hidden]).expand_as(cond)

    def _uncond(self, id_vector: torch.Tensor, vit_hidden: list[torch.Tensor]) -> torch.Tensor:
        """The encoder on all-zero inputs (spec 2.5). It is the same for every face, so it is computed once
        per input layout, device and dtype."""
        key = (tuple(id_vector.shape), tuple(tuple(h.shape) for h in vit_hidden), id_vector.device, id_vector.dtype)
        if key not in self._uncond_cache:
            self._uncond_cache[key] = self.pulid_encoder(torch.zeros_like(id_vector),
                                                         [torch.zeros_like(h) for h in vit_hidden])
        return self._uncond_cache[key]
