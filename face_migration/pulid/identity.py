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
        """Refuse a PuLID model other than the identity's; the message fits an identity from Encode Face and
        one from Load Identity (whose file name is in info["file"])."""
        if self.token_dim != model.cfg.token_dim or self.model_fingerprint != fingerprint:
            made = f"The face identity file {self.info['file']}" if "file" in self.info else "This face identity"
            raise IncompatibleModelError(
                f"{made} was made with PuLID weights {self.model_fingerprint} (token width {self.token_dim}); "
                f"the PuLID file given here has weights {fingerprint} (token width {model.cfg.token_dim}). Use the "
                f"same PuLID model for both: in the Load PuLID-FLUX Model node feeding Encode Face or Load Identity "
                f"and Apply, choose the PuLID file whose fingerprint is {self.model_fingerprint}, or encode the "
                f"face again with the PuLID file you want.")


def identity_from_embeddings(model: PulidFlux, fingerprint: str, id_vector: torch.Tensor,
                             vit_hidden: list[torch.Tensor], info: dict | None = None,
                             dtype: torch.dtype | None = None) -> PulidIdentity:
    """Run the IDFormer on [B, 1280] face vectors and EVA hidden states (in `dtype`, default the weights');
    tokens come back as float32 on CPU."""
    cond, uncond = model.encode(id_vector, vit_hidden, dtype)
    return PulidIdentity(cond.float().cpu(), uncond.float().cpu(), fingerprint, dict(info or {}))
