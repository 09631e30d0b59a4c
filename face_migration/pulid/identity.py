"""The `PULID_ID` value: ID tokens for the positive pass, the official uncond tokens for the negative
pass, and what they were made with, so Apply can refuse an identity from another PuLID model."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import IncompatibleModelError
from .model import PulidFlux


@dataclass(frozen=True)
class PulidIdentity:
    cond: torch.Tensor  # [N, T, token_dim]: N identities (1, or one per image of the batch), T = 32 per reference
    uncond: torch.Tensor  # same shape: IDFormer on all-zero inputs
    model_fingerprint: str  # weights_fingerprint of the PuLID file that encoded it
    info: dict = field(default_factory=dict)  # free-form notes for users (references, faces, ...)

    def __post_init__(self):
        if self.cond.ndim != 3 or self.cond.shape != self.uncond.shape:
            raise ValueError(f"ID tokens must be [N, T, D] with matching uncond, got {tuple(self.cond.shape)} "
                             f"and {tuple(self.uncond.shape)}")

    @property
    def token_dim(self) -> int:
        return self.cond.shape[-1]

    def check_against(self, model: PulidFlux, fingerprint: str) -> None:
        if self.token_dim != model.cfg.token_dim or self.model_fingerprint != fingerprint:
            raise IncompatibleModelError(
                f"This face identity was encoded with another PuLID model (weights {self.model_fingerprint}, "
                f"token width {self.token_dim}) than the one given to Apply (weights {fingerprint}, token width "
                f"{model.cfg.token_dim}). Connect the same PuLID model loader to the encode node and to Apply.")


def identity_from_embeddings(model: PulidFlux, fingerprint: str, id_vector: torch.Tensor,
                             vit_hidden: list[torch.Tensor], info: dict | None = None,
                             dtype: torch.dtype | None = None) -> PulidIdentity:
    """Run the IDFormer on [B, 1280] face vectors and EVA hidden states (in `dtype`, default the weights');
    tokens come back as float32 on CPU."""
    cond, uncond = model.encode(id_vector, vit_hidden, dtype)
    return PulidIdentity(cond.float().cpu(), uncond.float().cpu(), fingerprint, dict(info or {}))
