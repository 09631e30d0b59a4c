"""A random FLUX.1-dev diffusion model file small enough for CPU tests, in the key layout of the real one.

    python tests/make_tiny_flux.py OUT.safetensors [--seed N]

ComfyUI 0.3.64 detects a FLUX file by its keys but takes the width from constants (hidden 3072, 24 heads,
text context 4096); only the block counts, the input widths and the guidance embedder come from the
weights. So the file keeps FLUX.1's full width and cuts the depth to one double and one single block
(545 M parameters, 1.1 GB in bf16), which ComfyUI loads with its own UNETLoader as FLUX.1-dev.
`tests/integration/test_tiny_flux.py` checks the layout against ComfyUI's own FLUX and model detection.

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


def flux_layout(hidden: int = HIDDEN, heads: int = HEADS, double_blocks: int = DOUBLE_BLOCKS,
                single_blocks: int = SINGLE_BLOCKS, guidance: bool = True) -> dict[str, tuple[int, ...]]:
    """Every tensor of a FLUX.1 model (BFL names, as ComfyUI's comfy.ldm.flux.model.Flux has them) -> shape."""
    head_dim, mlp = hidden // heads, hidden * MLP_RATIO
    layout: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        layout[f"{name}.weight"] = (fan_out, fan_in)
        if bias:
            layout[f"{name}.bias"] = (fan_out,)

    def embedder(name: str, fan_in: int) -> None:  # Linear -> SiLU -> Linear
        linear(f"{name}.in_layer", fan_in, hidden)
        linear(f"{name}.out_layer", hidden, hidden)

    def qk_norm(prefix: str) -> None:  # RMSNorm scales of the per-head queries and keys
        layout[f"{prefix}.query_norm.scale"] = (head_dim,)
        layout[f"{prefix}.key_norm.scale"] = (head_dim,)

    linear("img_in", LATENT_CHANNELS * PATCH * PATCH, hidden)
    linear("txt_in", CONTEXT_DIM, hidden)
    embedder("time_in", TIMESTEP_DIM)
    embedder("vector_in", POOLED_DIM)
    if guidance:  # FLUX.1-dev's distilled guidance; schnell has none
        embedder("guidance_in", TIMESTEP_DIM)
    for i in range(double_blocks):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
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
        linear(f"{block}.modulation.lin", hidden, 3 * hidden)
    linear("final_layer.linear", hidden, PATCH * PATCH * LATENT_CHANNELS)
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_tiny_flux(args.output, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB, {len(flux_layout())} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
