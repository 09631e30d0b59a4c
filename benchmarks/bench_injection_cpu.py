#!/usr/bin/env python3
"""CPU benchmark: cost of our PuLID injection in ComfyUI's FLUX against the official PuLID injection.

FLUX.1 width (hidden 3072, 24 heads, mlp ratio 4) with few blocks (default 2 double + 4 single, so one
CA module after a double block and one after a single block), random fp32 weights shared by both
models, one 512x512 image (32x32 = 1024 image tokens) and 512 text tokens. Per model forward ("step"):

  (a) ComfyUI Flux plain           (b) ComfyUI Flux + our Apply patches (weight 1, identity active)
  (c) official PuLID Flux plain    (d) official PuLID Flux with pulid_ca / id (same CA weights)

Prints per-step times (least disturbed run by default, --stat), the ratios b/a, d/c, (b/a)/(d/c),
the FLOP-based ideal overhead, and two checks: ours costs no more than the official code (b/a <= d/c,
within --noise), and our overhead stays within 10 % of the ideal ((b/a - 1) <= 1.1 * ideal).
Variants run interleaved, in a rotating order, so slow drift of a shared machine hits all four alike.

    python benchmarks/bench_injection_cpu.py --comfyui /path/to/ComfyUI --pulid-reference /path/to/PuLID

Paths may also come from COMFYUI_PATH and PULID_REFERENCE. Without them it says so and exits 0.
Needs torch, einops and ComfyUI's import-time dependencies (psutil, ...). ~5 GB of RAM; on 2 cores one
step takes ~40 s, so the default 1 warm-up + 3 rounds take about 10 minutes.
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

from face_migration.injection import (CALL_CONTEXT_KEY, CallContext, Injection, PulidBlockPatch, StepRange,  # noqa: E402
                                      TokenGridWrapper, block_patches)
from face_migration.pulid.identity import PulidIdentity  # noqa: E402
from face_migration.pulid.model import PulidConfig, PulidFlux  # noqa: E402

HIDDEN, HEADS, MLP_RATIO = 3072, 24, 4.0
CONTEXT_DIM, VEC_DIM, LATENT_CHANNELS = 4096, 768, 16
ID_TOKENS = 32
# The CA modules at full size; the IDFormer is not used here, so it is kept tiny.
CA_CFG = dict(token_dim=2048, flux_hidden=HIDDEN, ca_inner_dim=2048)


# --- FLOP model (multiply-adds x 2; norms, RoPE and element-wise work ignored) -------------------

def flux_flops(img: int, txt: int, double: int, single: int, h: int = HIDDEN, mlp: float = MLP_RATIO) -> float:
    seq = img + txt
    m = int(h * mlp)
    per_double = (img + txt) * (3 * h * h + h * h + 2 * h * m) + 2 * seq * seq * h + 12 * h * h
    per_single = seq * (h * (3 * h + m) + (h + m) * h) + 2 * seq * seq * h + 3 * h * h
    embed = img * 64 * h + txt * CONTEXT_DIM * h + img * h * 64
    return 2.0 * (double * per_double + single * per_single + embed)


def ca_flops(img: int, n_ca: int, h: int = HIDDEN, inner: int = 2048, token_dim: int = 2048) -> float:
    per = img * h * inner + ID_TOKENS * token_dim * 2 * inner + 2 * img * ID_TOKENS * inner + img * inner * h
    return 2.0 * n_ca * per


# --- models ------------------------------------------------------------------------------------

def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Fan-in scaled uniform weights (activations stay of order one: no inf, no denormals)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 2:
            bound = (3.0 / shape[1]) ** 0.5
            out[key] = torch.empty(shape).uniform_(-bound, bound, generator=g)
        elif key.endswith(".bias"):
            out[key] = torch.empty(shape).uniform_(-0.02, 0.02, generator=g)
        else:
            out[key] = torch.ones(shape)
    return out


def build(comfyui: Path, reference: Path, double: int, single: int, attention: str):
    sys.path.append(str(comfyui))  # appended: ComfyUI's top-level `tests`/`utils` must not shadow anything
    sys.path.append(str(reference))
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.use_pytorch_cross_attention = attention == "pytorch"
    import comfy.ldm.flux.model as comfy_flux
    import comfy.ldm.modules.attention as comfy_attention
    import comfy.ops
    import flux.model as official_flux
    import pulid.encoders_transformer as official_pulid

    params = dict(vec_in_dim=VEC_DIM, context_in_dim=CONTEXT_DIM, hidden_size=HIDDEN, mlp_ratio=MLP_RATIO,
                  num_heads=HEADS, depth=double, depth_single_blocks=single, axes_dim=[16, 56, 56], theta=10000,
                  qkv_bias=True, guidance_embed=True)
    ours = comfy_flux.Flux(operations=comfy.ops.disable_weight_init, device="meta", dtype=torch.float32,
                           in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=2, **params)
    with torch.device("meta"):
        theirs = official_flux.Flux(official_flux.FluxParams(in_channels=LATENT_CHANNELS * 4, **params))
    sd = random_weights({k: tuple(v.shape) for k, v in ours.state_dict().items()}, seed=0)
    ours.load_state_dict(sd, strict=True, assign=True)
    theirs.load_state_dict(sd, strict=True, assign=True)  # the same tensors: one copy in memory

    placed = block_patches(double, single)
    cfg = PulidConfig(encoder_dim=64, encoder_depth=5, id_mapping_dim=16, vit_dim=16, vit_mapping_dim=16,
                      num_ca=len(placed), **CA_CFG)
    pulid = PulidFlux(cfg).eval()
    ca_sd = random_weights({k: tuple(v.shape) for k, v in pulid.state_dict().items()}, seed=1)
    pulid.load_state_dict(ca_sd, strict=True)
    theirs.pulid_ca = torch.nn.ModuleList(
        official_pulid.PerceiverAttentionCA(dim=HIDDEN, dim_head=128, heads=cfg.ca_heads, kv_dim=cfg.token_dim)
        for _ in range(cfg.num_ca))
    theirs.pulid_ca.load_state_dict({k[len("pulid_ca."):]: v for k, v in ca_sd.items() if k.startswith("pulid_ca.")},
                                    strict=True)
    info = {"comfy_attention": comfy_attention.optimized_attention.__name__, "placement": placed}
    return ours.eval(), theirs.eval(), pulid, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (env COMFYUI_PATH)")
    ap.add_argument("--pulid-reference", default=os.environ.get("PULID_REFERENCE"),
                    help="ToTheBeginning/PuLID checkout (env PULID_REFERENCE)")
    ap.add_argument("--double", type=int, default=2)
    ap.add_argument("--single", type=int, default=4)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--noise", type=float, default=0.005,
                    help="allowance for timing noise in the 'no more than official' check (ratio points)")
    ap.add_argument("--attention", choices=("pytorch", "default"), default="pytorch",
                    help="ComfyUI attention: pytorch SDPA like the official code (default), or ComfyUI's CPU choice")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--stat", choices=("min", "median"), default="min",
                    help="statistic of the timed runs used for ratios and checks")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = ap.parse_args()

    missing = [n for n, p in (("ComfyUI (--comfyui / COMFYUI_PATH)", args.comfyui),
                              ("PuLID reference (--pulid-reference / PULID_REFERENCE)", args.pulid_reference))
               if not p or not Path(p).is_dir()]
    if missing:
        print(f"bench_injection_cpu: skipped, no checkout given for: {'; '.join(missing)}.")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.set_grad_enabled(False)

    t0 = time.perf_counter()
    ours, theirs, pulid, info = build(Path(args.comfyui), Path(args.pulid_reference), args.double, args.single,
                                      args.attention)
    print(f"built models in {time.perf_counter() - t0:.0f} s; ComfyUI attention: {info['comfy_attention']}; "
          f"CA after {info['placement']} (kind, block, CA index); threads {torch.get_num_threads()}")

    g = torch.Generator().manual_seed(2)
    lat = args.size // 8
    grid = lat // 2
    x = torch.randn(1, LATENT_CHANNELS, lat, lat, generator=g)
    context = torch.randn(1, args.text_tokens, CONTEXT_DIM, generator=g)
    y = torch.randn(1, VEC_DIM, generator=g)
    t, guidance = torch.tensor([0.8]), torch.tensor([3.5])
    id_tokens = torch.randn(1, ID_TOKENS, CA_CFG["token_dim"], generator=g)
    img_tokens = grid * grid

    identity = PulidIdentity(id_tokens, torch.zeros_like(id_tokens), "bench")
    injection = Injection(pulid, identity, 1.0, StepRange(0, 1000))
    base_opts = {"cond_or_uncond": [0], "sigmas": t, "sample_sigmas": torch.tensor([1.0, 0.8, 0.5, 0.0])}
    patched_opts = {
        **base_opts,
        "patches_replace": {"dit": {(f"{kind}_block", block): PulidBlockPatch(kind, ca, (injection,))
                                    for kind, block, ca in info["placement"]}},
        "wrappers": {"diffusion_model": {"face_migration_pulid": [TokenGridWrapper()]}},
    }
    img = x.reshape(1, LATENT_CHANNELS, grid, 2, grid, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, img_tokens, -1)
    img_ids = torch.zeros(grid, grid, 3)
    img_ids[..., 1] = torch.arange(grid)[:, None]
    img_ids[..., 2] = torch.arange(grid)[None, :]
    img_ids = img_ids.reshape(1, img_tokens, 3)
    txt_ids = torch.zeros(1, args.text_tokens, 3)

    def comfy(opts):
        return lambda: ours(x, t, context, y=y, guidance=guidance, transformer_options=opts)

    def official(id_):
        return lambda: theirs(img=img, img_ids=img_ids, txt=context, txt_ids=txt_ids, timesteps=t, y=y,
                              guidance=guidance, id=id_, id_weight=1.0)

    variants = {"a": comfy(base_opts), "b": comfy(patched_opts), "c": official(None), "d": official(id_tokens)}
    labels = {"a": "ComfyUI Flux, plain", "b": "ComfyUI Flux + our Apply", "c": "official PuLID Flux, plain",
              "d": "official PuLID Flux + pulid_ca"}

    # Same maths on both sides: the outputs agree (the token layouts differ only by the (un)packing).
    out_b = variants["b"]()
    out_d = variants["d"]().reshape(1, grid, grid, LATENT_CHANNELS, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(out_b.shape)
    agree = float((out_b - out_d).abs().max() / out_d.abs().max())
    print(f"ours vs official output with identity: max relative difference {agree:.2e}")

    # Wall time is what a user waits; on a shared machine other processes add to it, so the checks use
    # the least disturbed run (--stat min) unless told otherwise, and CPU time is shown beside it.
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    order = list(variants)
    for r in range(args.warmup + args.rounds):
        for k in order[r % 4:] + order[:r % 4]:
            start, start_cpu = time.perf_counter(), time.process_time()
            variants[k]()
            if r >= args.warmup:
                wall[k].append(time.perf_counter() - start)
                cpu[k].append(time.process_time() - start_cpu)
        print(f"round {r + 1}/{args.warmup + args.rounds}{' (warm-up)' if r < args.warmup else ''} done")
    pick = min if args.stat == "min" else statistics.median
    med = {k: pick(v) for k, v in wall.items()}
    cpu_med = {k: pick(v) for k, v in cpu.items()}

    ideal = ca_flops(img_tokens, len(info["placement"])) / flux_flops(img_tokens, args.text_tokens, args.double,
                                                                       args.single)
    ours_ratio, theirs_ratio = med["b"] / med["a"], med["d"] / med["c"]
    print(f"\nFLUX.1 width, {args.double} double + {args.single} single blocks, {args.size}x{args.size} "
          f"({img_tokens} image + {args.text_tokens} text tokens), fp32 CPU, {args.stat} of {args.rounds} runs:")
    for k in variants:
        print(f"  ({k}) {labels[k]:32s} {med[k]:8.3f} s/step (CPU {cpu_med[k]:7.3f} s)   "
              f"wall runs: {', '.join(f'{v:.3f}' for v in wall[k])}")
    print(f"  b/a = {ours_ratio:.4f}   d/c = {theirs_ratio:.4f}   (b/a)/(d/c) = {ours_ratio / theirs_ratio:.4f}")
    print(f"  CPU time: b/a = {cpu_med['b'] / cpu_med['a']:.4f}   d/c = {cpu_med['d'] / cpu_med['c']:.4f}")
    print(f"  extra time per step: ours {med['b'] - med['a']:.3f} s, official {med['d'] - med['c']:.3f} s")
    full_512 = ca_flops(1024, 20) / flux_flops(1024, args.text_tokens, 19, 38)
    full_1024 = ca_flops(4096, 20) / flux_flops(4096, args.text_tokens, 19, 38)
    print(f"  FLOP-based ideal overhead here: {100 * ideal:.2f} % (full FLUX.1-dev, 20 CA, {args.text_tokens} "
          f"text tokens: {100 * full_512:.2f} % at 512x512, {100 * full_1024:.2f} % at 1024x1024)")

    # The injection alone, after a single block: far shorter runs, so far less exposed to other processes.
    ca0 = info["placement"][-1][2]
    block_out = torch.randn(1, args.text_tokens + img_tokens, HIDDEN, generator=g)
    single_patch = patched_opts["patches_replace"]["dit"][("single_block", info["placement"][-1][1])]
    call_opts = {**patched_opts, CALL_CONTEXT_KEY: CallContext((grid, grid), txt_len=args.text_tokens)}

    def ours_alone():
        single_patch({"img": block_out, "transformer_options": call_opts},
                     {"original_block": lambda a: {"img": a["img"].clone()}})

    def official_alone():  # flux/model.py's single-block tail
        x_ = block_out.clone()
        txt_, real = x_[:, :args.text_tokens], x_[:, args.text_tokens:]
        real = real + 1.0 * theirs.pulid_ca[ca0](id_tokens, real)
        torch.cat((txt_, real), 1)

    alone = {"ours": [], "official": []}
    for r in range(2 * max(args.rounds, 3) + 2):
        for name, fn in (("ours", ours_alone), ("official", official_alone))[::1 if r % 2 else -1]:
            start = time.perf_counter()
            fn()
            if r >= 2:
                alone[name].append(time.perf_counter() - start)
    alone_ours, alone_official = min(alone["ours"]), min(alone["official"])
    print(f"  injection alone (one CA after a single block, min of {len(alone['ours'])}): ours {alone_ours:.3f} s, "
          f"official {alone_official:.3f} s, ratio {alone_ours / alone_official:.4f}")

    checks = {
        f"ours costs no more than official (b/a <= d/c + {args.noise})": ours_ratio <= theirs_ratio + args.noise,
        f"injection alone: ours <= official * (1 + {args.noise})": alone_ours <= alone_official * (1 + args.noise),
        f"our overhead within 10 % of ideal ({100 * (ours_ratio - 1):.2f} % <= {110 * ideal:.2f} %)":
            ours_ratio - 1 <= 1.1 * ideal,
    }
    for text, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}: {text}")
    return 1 if args.strict and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
