"""Shared checks of a weights file against the exact layout a network expects, and a guess of what a
wrong file is, so every loader's error tells the user which file they picked and where it belongs."""
from __future__ import annotations

from typing import Iterable, Mapping

# (key fragments, what such a file is), most specific first.
_FAMILIES = (
    (("lora_", "lora.", ".lora"), "a LoRA (it belongs in models/loras)"),
    (("pulid_encoder.", "pulid_ca."), "a PuLID-FLUX model (it belongs in models/pulid)"),
    (("double_blocks.",), "a FLUX diffusion model (it belongs in models/diffusion_models)"),
    (("diffusion_model.",), "a diffusion model checkpoint (it belongs in models/checkpoints)"),
    (("text_model.", "encoder.block.", "shared.weight", "token_embedding", "transformer.resblocks"),
     "a text encoder (CLIP-L / T5, FLUX's text model), not a vision model"),
    (("vision_model.encoder.", "vision_model.embeddings."),
     "a Hugging Face CLIP vision model (models/clip_vision), not EVA02-CLIP"),
    (("trunk.", "attn.norm.", "mlp.fc1_g"),
     "an open_clip/timm EVA02 export, whose layout differs from the official EVA-CLIP release"),
    (("visual.blocks.", "blocks.0.attn.q_bias"), "an EVA-CLIP vision model (it belongs in models/clip)"),
    (("cp.resnet.",), "facexlib's BiSeNet face parsing model (parsing_bisenet.pth, models/facexlib)"),
    (("body.layer1.",), "facexlib's RetinaFace-ResNet50 detector (detection_Resnet50_Final.pth, models/facexlib)"),
    (("body.stage1.",), "facexlib's RetinaFace-MobileNet0.25 detector (PuLID uses the ResNet50 one)"),
)


def describe_model(keys: Iterable[str]) -> str:
    """A short guess of which model a set of tensor names belongs to."""
    keys = list(keys)
    lowered = [k.lower() for k in keys]
    for fragments, family in _FAMILIES:
        if any(f in k for k in lowered for f in fragments):
            return family
    return f"some other model (first keys: {', '.join(sorted(keys)[:3]) or 'none'})"


def layout_problems(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                    optional: Iterable[str] = ()) -> list[str]:
    """Missing, unexpected and wrongly shaped tensors of a file against the expected layout, as phrases
    for an error message (empty when the file fits). `optional` keys may be absent."""
    optional = set(optional)
    problems = []
    missing = sorted(set(expected) - set(shapes) - optional)
    unexpected = sorted(set(shapes) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    wrong = [f"{k}: {list(shapes[k])} instead of {list(v)}" for k, v in expected.items()
             if k in shapes and tuple(shapes[k]) != tuple(v)]
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (e.g. {'; '.join(wrong[:3])})")
    return problems
