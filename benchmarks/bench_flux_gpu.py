"""GPU benchmark: ComfyUI's FLUX.1-dev architecture (19 double + 38 single blocks, hidden 3072) with random
bf16 weights at 1024x1024, plain against with our Apply patches (20 full-size CA modules, identity active
on every step): time per model forward ("step") and peak VRAM, with the ratio and the extra memory.

Targets (issue 3): at most 3 % extra time per step and 1.3 GB extra VRAM.

    python benchmarks/bench_flux_gpu.py --comfyui /path/to/ComfyUI                 # on a CUDA machine
    python benchmarks/bench_flux_gpu.py --comfyui PATH --device cpu --double 1 --single 2 --size 256 \\
        --dtype float32 --rounds 1                                                 # quick check of the script

Plain and patched steps alternate so drift hits both alike. Without a ComfyUI checkout it says so and exits 0;
without a GPU (and no --device cpu) likewise.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_injection_cpu import CA_CFG, CONTEXT_DIM, HEADS, HIDDEN, ID_TOKENS, LATENT_CHANNELS, MLP_RATIO, VEC_DIM  # noqa: E402
from face_migration.injection import Injection, PulidBlockPatch, StepRange, TokenGridWrapper, block_patches  # noqa: E402
from face_migration.pulid.identity import PulidIdentity  # noqa: E402
from face_migration.pulid.model import PulidConfig, PulidFlux  # noqa: E402


def init_random_(module: torch.nn.Module, seed: int) -> None:
    """Fan-in scaled random weights, generated on the module's device (12 B parameters never touch the CPU)."""
    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, p.shape[-1] ** -0.5, generator=g)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)


def build(comfyui: Path, double: int, single: int, device: torch.device, dtype: torch.dtype):
    sys.path.append(str(comfyui))
    import comfy.cli_args
    comfy.cli_args.args.cpu = device.type == "cpu"
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.ldm.flux.model as comfy_flux
    import comfy.ops

    flux = comfy_flux.Flux(operations=comfy.ops.disable_weight_init, device=device, dtype=dtype,
                           in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=2,
                           vec_in_dim=VEC_DIM, context_in_dim=CONTEXT_DIM, hidden_size=HIDDEN, mlp_ratio=MLP_RATIO,
                           num_heads=HEADS, depth=double, depth_single_blocks=single, axes_dim=[16, 56, 56],
                           theta=10000, qkv_bias=True, guidance_embed=True).eval().requires_grad_(False)
    init_random_(flux, 0)
    placed = block_patches(double, single)
    pulid = PulidFlux(PulidConfig(encoder_dim=64, encoder_depth=5, id_mapping_dim=16, vit_dim=16, vit_mapping_dim=16,
                                  num_ca=len(placed), **CA_CFG)).to(device, dtype).eval().requires_grad_(False)
    init_random_(pulid, 1)
    return flux, pulid, placed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (env COMFYUI_PATH)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else None)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--double", type=int, default=19)
    ap.add_argument("--single", type=int, default=38)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if not args.comfyui or not Path(args.comfyui).is_dir():
        print("bench_flux_gpu: skipped, no ComfyUI checkout given (--comfyui / COMFYUI_PATH).")
        return 0
    if args.device is None:
        print("bench_flux_gpu: skipped, no GPU here (pass --device cpu with a small --double/--single to test it).")
        return 0
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    flux, pulid, placed = build(Path(args.comfyui), args.double, args.single, device, dtype)

    g = torch.Generator(device=device).manual_seed(2)
    lat = args.size // 8
    x = torch.randn(1, LATENT_CHANNELS, lat, lat, generator=g, device=device, dtype=dtype)
    context = torch.randn(1, args.text_tokens, CONTEXT_DIM, generator=g, device=device, dtype=dtype)
    y = torch.randn(1, VEC_DIM, generator=g, device=device, dtype=dtype)
    t = torch.tensor([0.8], device=device, dtype=dtype)
    guidance = torch.tensor([3.5], device=device, dtype=dtype)
    id_tokens = torch.randn(1, ID_TOKENS, CA_CFG["token_dim"], generator=g, device=device, dtype=dtype)
    injection = Injection(pulid, PulidIdentity(id_tokens, torch.zeros_like(id_tokens), "bench"), 1.0, StepRange(0, 10**6))
    plain = {"cond_or_uncond": [0], "sigmas": t, "sample_sigmas": torch.tensor([1.0, 0.8, 0.0], device=device)}
    patched = {**plain,
               "patches_replace": {"dit": {(f"{k}_block", b): PulidBlockPatch(k, ca, (injection,)) for k, b, ca in placed}},
               "wrappers": {"diffusion_model": {"face_migration_pulid": [TokenGridWrapper()]}}}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(options) -> float:
        sync()
        start = time.perf_counter()
        flux(x, t, context, y=y, guidance=guidance, transformer_options=options)
        sync()
        return time.perf_counter() - start

    def peak(options) -> int:
        if device.type != "cuda":
            return 0
        torch.cuda.reset_peak_memory_stats()
        step(options)
        return torch.cuda.max_memory_allocated()

    for _ in range(args.warmup):
        step(plain), step(patched)
    times = {"plain": [], "patched": []}
    for _ in range(args.rounds):
        times["plain"].append(step(plain))
        times["patched"].append(step(patched))
    plain_s, patched_s = statistics.median(times["plain"]), statistics.median(times["patched"])
    extra_mem = peak(patched) - peak(plain)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    ratio = patched_s / plain_s
    print(f"device {name}, {args.dtype}, {args.double} double + {args.single} single blocks, {args.size}x{args.size}, "
          f"{len(placed)} CA modules")
    print(f"per step: plain {plain_s * 1000:.1f} ms, with Apply {patched_s * 1000:.1f} ms, ratio {ratio:.4f} "
          f"({(ratio - 1) * 100:+.2f} %, target <= +3 %)")
    if device.type == "cuda":
        ca_bytes = sum(p.numel() * p.element_size() for p in pulid.pulid_ca.parameters())
        # Both runs hold the CA weights here; without Apply a user would not load them at all.
        total = extra_mem + ca_bytes
        print(f"peak VRAM extra {total / 1e9:.2f} GB = CA weights {ca_bytes / 1e9:.2f} GB + activations "
              f"{extra_mem / 1e9:.2f} GB (target <= 1.3 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
