"""Which diffusion models PuLID-FLUX fits, told by their structure rather than their class.

PuLID-FLUX v0.9.x was trained on FLUX.1: its cross-attention modules read FLUX.1's 3072-wide image tokens
after every 2nd double and every 4th single block. FLUX.1's open descendants keep those blocks and that width
and differ only around them: Chroma (and its pixel-space Chroma Radiance) replaces FLUX.1's modulation inputs
(`vector_in`, `guidance_in`) with a `distilled_guidance_layer`, Kontext appends reference tokens. Models that
merely reuse FLUX's code (FLUX.2 with its shared modulation, HunyuanVideo's video patches, Flux-architecture
models on another text encoder) are another network, and are refused with the reason.

Reads attributes of ComfyUI's model objects (no `comfy` import): `double_blocks`, `single_blocks`,
`hidden_size`, `patch_size`, `txt_in`, and what tells the descendants apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UnsupportedModelError

T5_XXL_WIDTH = 4096  # FLUX.1's and Chroma's text tokens come from T5-XXL
SUPPORTED = "FLUX.1 (dev, schnell, Krea-dev, Kontext), Chroma (Chroma1-HD, Chroma1-Base) or Chroma1-Radiance"


@dataclass(frozen=True)
class FluxFamilyModel:
    """A diffusion model of the FLUX.1 family: its name for messages and what PuLID's placement needs."""
    name: str
    hidden: int
    double_blocks: int
    single_blocks: int


def _refuse(kind: str, what: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Apply PuLID input 'model' is {what} ({kind}): {reason} PuLID-FLUX works with {SUPPORTED}; connect "
        f"one of those (loaded with Load Diffusion Model / UNETLoader) to Apply PuLID.")


def flux1_family(diffusion_model) -> FluxFamilyModel:
    """The model as a member of the FLUX.1 family, or an UnsupportedModelError naming what it is and why
    PuLID-FLUX cannot work on it."""
    kind = type(diffusion_model).__name__
    doubles, singles = getattr(diffusion_model, "double_blocks", None), getattr(diffusion_model, "single_blocks", None)
    if doubles is None or singles is None or not hasattr(diffusion_model, "hidden_size"):
        raise _refuse(kind, f"a {kind} model", "it has no FLUX-style double and single stream blocks, where "
                      "PuLID-FLUX's cross-attention runs (SD1.5/SDXL, SD3, HiDream, Qwen-Image and other families "
                      "have their own ID adapters).")
    if hasattr(diffusion_model, "double_stream_modulation_img"):
        raise _refuse(kind, "FLUX.2", "FLUX.2 (dev, klein) shares one modulation across its blocks and has its own "
                      "width, depth and text encoder; PuLID-FLUX was trained on FLUX.1's tokens and has no FLUX.2 "
                      "release.")
    if not isinstance(getattr(diffusion_model, "patch_size", None), int):
        raise _refuse(kind, f"a {kind} model", "it patches video (space-time patches), not a FLUX.1 image "
                      "token grid.")
    block = doubles[0] if len(doubles) else None
    if block is None or not all(hasattr(block, n) for n in ("img_attn", "txt_attn", "img_mlp")) \
            or hasattr(block.img_mlp, "gate_proj"):
        raise _refuse(kind, f"a {kind} model", "its double blocks are not FLUX.1's (image and text attention "
                      "with a plain MLP).")
    text_width = getattr(getattr(diffusion_model, "txt_in", None), "in_features", T5_XXL_WIDTH)
    if text_width != T5_XXL_WIDTH or getattr(diffusion_model, "txt_norm", None) is not None:
        raise _refuse(kind, f"a FLUX-architecture model of another family (text input {text_width} wide)",
                      f"FLUX.1 and Chroma read T5-XXL's {T5_XXL_WIDTH}-wide text tokens; this model was "
                      f"trained on another text encoder (e.g. Ovis-Image, LongCat-Image), and PuLID-FLUX on "
                      f"FLUX.1's features.")
    if hasattr(diffusion_model, "distilled_guidance_layer"):
        name = "Chroma Radiance" if hasattr(diffusion_model, "nerf_blocks") else "Chroma"
    else:
        name = "FLUX.1"
    return FluxFamilyModel(name, diffusion_model.hidden_size, len(doubles), len(singles))
