"""`python -m face_migration convert-eva SRC.pt [DST.safetensors]`: write the EVA02-CLIP-L-14-336
vision tower of the official checkpoint as a pickle-free, visual-only .safetensors.

The output keeps the source's dtype and the official key names with their `visual.` prefix (so the
file stays recognisable as an EVA-CLIP vision tower); RoPE tables are left out (they are recomputed).
It is written next to the source by default (`<name>_visual.safetensors`), checked by loading it back
and comparing every tensor with the source, and only then moved into place.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from safetensors.torch import save_file

from ..errors import FaceMigrationError, ModelFileError
from .eva_clip import VISUAL_PREFIX, load_eva_clip, read_visual_state_dict

HELP = "convert the official EVA02-CLIP-L-14-336 .pt into a visual-only .safetensors (no pickle)"


def default_destination(src: str) -> str:
    return os.path.splitext(src)[0] + "_visual.safetensors"


def convert(src: str, dst: str) -> dict[str, torch.Tensor]:
    """Write the visual tensors of src to dst (verified); returns them (keys without `visual.`).
    src is read as the loader reads it: tensors only, no pickled code ever runs."""
    state = read_visual_state_dict(src)
    tmp = dst + ".partial"
    save_file({VISUAL_PREFIX + k: v.detach().contiguous().clone() for k, v in state.items()}, tmp,
              metadata={"format": "pt", "model": "EVA02-CLIP-L-14-336 visual tower",
                        "source": os.path.basename(src)})
    try:
        reloaded = load_eva_clip(tmp).state_dict()
        differing = [k for k, v in state.items() if reloaded[k].dtype != v.dtype or not torch.equal(reloaded[k], v)]
        if differing:
            raise ModelFileError(f"verification of {dst} failed: {len(differing)} tensors differ from {src} "
                                 f"(e.g. {differing[0]}). Check the disk and try again.")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="EVA02_CLIP_L_336_psz14_s6B.pt (or any file the EVA-CLIP loader accepts)")
    parser.add_argument("dst", nargs="?", help="output .safetensors (default: <src name>_visual.safetensors)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def run(args: argparse.Namespace) -> int:
    dst = args.dst or default_destination(args.src)
    if os.path.abspath(dst) == os.path.abspath(args.src):
        print(f"error: the output {dst} would overwrite the source", file=sys.stderr)
        return 2
    if os.path.exists(dst) and not args.force:
        print(f"error: {dst} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        state = convert(args.src, dst)
    except (FaceMigrationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    params = sum(v.numel() for v in state.values())
    dtypes = ", ".join(sorted({str(v.dtype).replace("torch.", "") for v in state.values()}))
    src_mb, dst_mb = os.path.getsize(args.src) / 2**20, os.path.getsize(dst) / 2**20
    print(f"source  {args.src}: {src_mb:.1f} MiB")
    print(f"wrote   {dst}: {dst_mb:.1f} MiB ({len(state)} tensors, {params:,} parameters, {dtypes})")
    print("verified: the file loads as the EVA02-CLIP vision tower and every tensor equals the source")
    return 0
