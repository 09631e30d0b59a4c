"""Random FLUX.1-family diffusion model files small enough for CPU tests, in the key layout of the real ones:
FLUX.1-dev, Chroma (Chroma1-HD / Base) and Chroma1-Radiance.

    python tests/make_tiny_flux.py OUT.safetensors [--family flux1|chroma|chroma_radiance] [--seed N]

ComfyUI 0.3.64 detects these files by their keys but takes most widths from constants (hidden 3072, 24 heads,
text context 4096; Chroma's modulation approximator 64 -> 5120 x 5 -> 3072; Radiance's NeRF head); only the
block counts, the input widths and the guidance embedder come from the weights. So the files keep the full
widths and cut the depth to one double and one single block: FLUX.1-dev 545 M parameters (1.1 GB in bf16),
Chroma 631 M (1.3 GB), Chroma Radiance 1.24 G (2.5 GB, most of it the NeRF head's parameter generators), which
ComfyUI loads with its own UNETLoader as Flux, Chroma and ChromaRadiance.
`tests/integration/test_tiny_flux.py` checks the layouts against ComfyUI's own models and model detection.

The file is written tensor by tensor: only one tensor is in memory at a time, whatever the file size.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import torch

HIDDEN = 3072
HEADS = 24
DOUBLE_BLOCKS = 1
SINGLE_BLOCKS = 1
LATENT_CHANNELS = 16
PATCH = 2
CONTEXT_DIM = 4096  # T5-XXL
POOLED_DIM = 768  # CLIP-L
TIMESTEP_DIM = 256
MLP_RATIO = 4
WEIGHT_STD = 0.02
FAMILIES = ("flux1", "chroma", "chroma_radiance")
# Chroma's modulation approximator: 16-dim timestep and guidance + 32-dim index embeddings in, one modulation
# vector per slot out (sizes fixed by ComfyUI's model detection).
APPROXIMATOR_IN, APPROXIMATOR_HIDDEN, APPROXIMATOR_LAYERS = 64, 5120, 5
# Chroma Radiance works on pixels: 16 x 16 RGB patches in, a per-patch NeRF head out.
PIXEL_CHANNELS, RADIANCE_PATCH = 3, 16
NERF_HIDDEN, NERF_MLP_RATIO, NERF_DEPTH, NERF_MAX_FREQS = 64, 4, 4, 8


def flux_layout(hidden: int = HIDDEN, heads: int = HEADS, double_blocks: int = DOUBLE_BLOCKS,
                single_blocks: int = SINGLE_BLOCKS, guidance: bool = True,
                family: str = "flux1") -> dict[str, tuple[int, ...]]:
    """Every tensor of a FLUX.1-family model (BFL names, as ComfyUI's comfy.ldm.flux / chroma / chroma_radiance
    models have them) -> shape. FLUX.1 modulates each block from `vector_in` / `guidance_in` (`guidance`:
    dev's distilled guidance, schnell has none); Chroma takes every modulation from its
    `distilled_guidance_layer` instead; Chroma Radiance also patches pixels with a convolution and decodes
    each patch with a NeRF head."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: expected one of {FAMILIES}")
    head_dim, mlp = hidden // heads, hidden * MLP_RATIO
    modulated = family == "flux1"
    layout: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        layout[f"{name}.weight"] = (fan_out, fan_in)
        if bias:
            layout[f"{name}.bias"] = (fan_out,)

    def embedder(name: str, fan_in: int, width: int = hidden) -> None:  # Linear -> SiLU -> Linear
        linear(f"{name}.in_layer", fan_in, width)
        linear(f"{name}.out_layer", width, width)

    def qk_norm(prefix: str) -> None:  # RMSNorm scales of the per-head queries and keys
        layout[f"{prefix}.query_norm.scale"] = (head_dim,)
        layout[f"{prefix}.key_norm.scale"] = (head_dim,)

    if family == "chroma_radiance":
        layout["img_in_patch.weight"] = (hidden, PIXEL_CHANNELS, RADIANCE_PATCH, RADIANCE_PATCH)
        layout["img_in_patch.bias"] = (hidden,)
    else:
        linear("img_in", LATENT_CHANNELS * PATCH * PATCH, hidden)
    linear("txt_in", CONTEXT_DIM, hidden)
    if modulated:
        embedder("time_in", TIMESTEP_DIM)
        embedder("vector_in", POOLED_DIM)
        if guidance:  # FLUX.1-dev's distilled guidance; schnell has none
            embedder("guidance_in", TIMESTEP_DIM)
    else:
        linear("distilled_guidance_layer.in_proj", APPROXIMATOR_IN, APPROXIMATOR_HIDDEN)
        for i in range(APPROXIMATOR_LAYERS):
            embedder(f"distilled_guidance_layer.layers.{i}", APPROXIMATOR_HIDDEN, APPROXIMATOR_HIDDEN)
            layout[f"distilled_guidance_layer.norms.{i}.scale"] = (APPROXIMATOR_HIDDEN,)
        linear("distilled_guidance_layer.out_proj", APPROXIMATOR_HIDDEN, hidden)
    for i in range(double_blocks):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            if modulated:
                linear(f"{block}_mod.lin", hidden, 6 * hidden)  # shift, scale, gate for attention and MLP
            linear(f"{block}_attn.qkv", hidden, 3 * hidden)
            qk_norm(f"{block}_attn.norm")
            linear(f"{block}_attn.proj", hidden, hidden)
            linear(f"{block}_mlp.0", hidden, mlp)
            linear(f"{block}_mlp.2", mlp, hidden)
    for i in range(single_blocks):
        block = f"single_blocks.{i}"
        linear(f"{block}.linear1", hidden, 3 * hidden + mlp)  # qkv and the MLP input in one matrix
        linear(f"{block}.linear2", hidden + mlp, hidden)
        qk_norm(f"{block}.norm")
        if modulated:
            linear(f"{block}.modulation.lin", hidden, 3 * hidden)
    if family == "chroma_radiance":
        linear("nerf_image_embedder.embedder.0", PIXEL_CHANNELS + NERF_MAX_FREQS ** 2, NERF_HIDDEN)
        for i in range(NERF_DEPTH):  # each generates a patch's gate, value and output matrices
            linear(f"nerf_blocks.{i}.param_generator", hidden, 3 * NERF_HIDDEN ** 2 * NERF_MLP_RATIO)
            layout[f"nerf_blocks.{i}.norm.scale"] = (NERF_HIDDEN,)
        layout["nerf_final_layer_conv.norm.scale"] = (NERF_HIDDEN,)
        layout["nerf_final_layer_conv.conv.weight"] = (PIXEL_CHANNELS, NERF_HIDDEN, 3, 3)
        layout["nerf_final_layer_conv.conv.bias"] = (PIXEL_CHANNELS,)
    else:
        linear("final_layer.linear", hidden, PATCH * PATCH * LATENT_CHANNELS)
        if modulated:
            linear("final_layer.adaLN_modulation.1", hidden, 2 * hidden)
    return layout


def _value(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if key.endswith(".scale"):
        return torch.ones(shape)
    if key.endswith(".bias"):
        return torch.zeros(shape)
    return torch.randn(shape, generator=gen) * WEIGHT_STD


def write_tiny_flux(path: str | Path, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                    layout: dict[str, tuple[int, ...]] | None = None) -> Path:
    """Write the file in the safetensors format (8-byte header length, JSON header, raw little-endian data).
    `layout` defaults to flux_layout(); weights N(0, 0.02) seeded, biases 0, RMSNorm scales 1."""
    names = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
    item = torch.tensor([], dtype=dtype).element_size()
    layout = sorted((flux_layout() if layout is None else layout).items())
    header: dict = {"__metadata__": {"format": "pt", "made_by": "tests/make_tiny_flux.py", "seed": str(seed)}}
    offset = 0
    for key, shape in layout:
        size = item * int(torch.Size(shape).numel())
        header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw_header = json.dumps(header, separators=(",", ":")).encode()
    raw_header += b" " * (-len(raw_header) % 8)  # the data starts 8-byte aligned
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw_header)) + raw_header)
        for key, shape in layout:
            tensor = _value(key, shape, gen).to(dtype).contiguous()
            out.write(tensor.view(torch.uint8).numpy())  # the buffer itself, no copy
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--family", choices=FAMILIES, default="flux1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    layout = flux_layout(family=args.family)
    path = write_tiny_flux(args.output, args.seed, layout=layout)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB, {len(layout)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
