#!/usr/bin/env python3
"""CPU benchmark: what the Apply node adds to a FLUX step, against the official PuLID injection.

FLUX.1 width (hidden 3072, 24 heads, mlp ratio 4) with few blocks (default 1 double + 1 single: one CA
module after each kind), random fp32 weights loaded as UNETLoader loads a file, 512x512 (1024 image tokens)
and 512 text tokens. The PuLID model is a random file with the real CA sizes, loaded by the node's
`PulidModelHandle` (comfy.ops.manual_cast) and applied by the node's `apply_pulid`; every ComfyUI case is
one euler step with CFG 1 through ComfyUI's sampler (comfy.sample.sample), with the attention ComfyUI picks
on --cpu (sub-quadratic); --sdpa adds plain and Apply with PyTorch SDPA. The official PuLID FLUX
(flux/model.py of ToTheBeginning/PuLID) shares the same weight tensors and gets the same CA weights.

Cases, in paired rounds (benchmarks/method.py: all cases each round, order reversed every other round):
  plain           ComfyUI FLUX                        apply     + one Apply (identity active)
  apply x2 mask   + two Apply nodes, left/right masks inactive  + one Apply whose steps never come
  official plain  official FLUX, id=None              official  + pulid_ca and the same ID tokens
Printed: extra seconds per step (median and per-round min/max) with the ratio's spread and a verdict, and
in-situ shares of the same forward, timed by module hooks: time outside FLUX's own modules (our patches,
wrappers and CA modules, or the official injection) minus the same in that round's plain run, the CA
modules alone, and the share scaled to FLUX.1-dev's 19 + 38 blocks from the measured per-block times. The
official side is not charged with the `cat` its plain forward also does (only the difference counts).

    python benchmarks/bench_injection_cpu.py --comfyui /path/to/ComfyUI --pulid-reference /path/to/PuLID

Paths may also come from COMFYUI_PATH and PULID_REFERENCE; without them it says so and exits 0. Run it
with ComfyUI's Python. Peak resident memory (printed at the end) measured 4.8 GB at --size 256 and 128; each
round runs 6 FLUX steps.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import flux_harness as fh  # noqa: E402
import method  # noqa: E402

# FLUX.1-dev: blocks, and the CA modules PuLID places after them (every 2nd double, every 4th single).
DEV_BLOCKS = {"double": 19, "single": 38}
DEV_CA = {"double": 10, "single": 10}


# --- FLOP model (multiply-adds x 2; norms, RoPE and element-wise work ignored) -------------------

def flux_flops(img: int, txt: int, double: int, single: int, h: int = fh.HIDDEN, mlp: float = fh.MLP_RATIO) -> float:
    seq = img + txt
    m = int(h * mlp)
    per_double = (img + txt) * (3 * h * h + h * h + 2 * h * m) + 2 * seq * seq * h + 12 * h * h
    per_single = seq * (h * (3 * h + m) + (h + m) * h) + 2 * seq * seq * h + 3 * h * h
    embed = img * 64 * h + txt * fh.CONTEXT_DIM * h + img * h * 64
    return 2.0 * (double * per_double + single * per_single + embed)


def ca_flops(img: int, n_ca: int, h: int = fh.HIDDEN, inner: int = 2048, token_dim: int = fh.TOKEN_DIM) -> float:
    per = img * h * inner + fh.ID_TOKENS * token_dim * 2 * inner + 2 * img * fh.ID_TOKENS * inner + img * inner * h
    return 2.0 * n_ca * per


# --- in-situ shares ----------------------------------------------------------------------------

def outside(clock: fh.Clock) -> float:
    """Time inside the model calls not spent in FLUX's own modules (patches, wrappers, CA modules, glue)."""
    return clock.seconds["model call"] - sum(v for k, v in clock.seconds.items() if k.startswith("flux "))


def per_run(clock: fh.Clock) -> float:
    """Time of a sampling run outside the model calls (sampler, model loading, run wrappers)."""
    return clock.seconds["total"] - clock.seconds["model call"]


def scaled_share(case: fh.Clock, plain: fh.Clock, n_ca: dict[str, int]) -> float:
    """Extra share of a FLUX.1-dev step, from one round's per-block and per-CA times. What the injection adds
    beyond its CA modules (adds, masks, wrappers) is counted once per CA place: an upper bound."""
    block = {k: case.seconds[f"flux {k}"] / case.calls[f"flux {k}"] for k in DEV_BLOCKS}
    ca = {k: case.seconds[f"ca {k}"] / n_ca[k] for k in DEV_BLOCKS}
    extra = outside(case) - outside(plain)
    rest_per_place = (extra - sum(case.seconds[f"ca {k}"] for k in DEV_BLOCKS)) / sum(n_ca.values())
    dev_extra = sum(DEV_CA[k] * (ca[k] + rest_per_place) for k in DEV_BLOCKS)
    dev_plain = sum(DEV_BLOCKS[k] * block[k] for k in DEV_BLOCKS) + case.seconds["flux other"] + outside(plain)
    return dev_extra / dev_plain


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (env COMFYUI_PATH)")
    ap.add_argument("--pulid-reference", default=os.environ.get("PULID_REFERENCE"),
                    help="ToTheBeginning/PuLID checkout (env PULID_REFERENCE)")
    ap.add_argument("--double", type=int, default=1)
    ap.add_argument("--single", type=int, default=1)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--sdpa", action="store_true", help="also plain and Apply with PyTorch SDPA attention")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
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
    fh.import_comfyui(Path(args.comfyui), cpu=True)
    sys.path.append(str(args.pulid_reference))
    import comfy.ldm.flux.math as comfy_flux_math
    import comfy.ldm.modules.attention as comfy_attention
    import flux.model as official_flux
    import pulid.encoders_transformer as official_pulid
    pulid_nodes = fh.import_pack()

    sd = fh.flux_state_dict(args.double, args.single, torch.float32)
    plain = fh.load_flux(sd)
    ours = plain.get_model_object("diffusion_model")
    with torch.device("meta"):
        theirs = official_flux.Flux(official_flux.FluxParams(
            in_channels=fh.LATENT_CHANNELS * 4, vec_in_dim=fh.VEC_DIM, context_in_dim=fh.CONTEXT_DIM,
            hidden_size=fh.HIDDEN, mlp_ratio=fh.MLP_RATIO, num_heads=fh.HEADS, depth=args.double,
            depth_single_blocks=args.single, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True))
    theirs.load_state_dict(ours.state_dict(), strict=True, assign=True)  # the same tensors: one copy in memory
    del sd
    n_ca = {"double": len(range(0, args.double, 2)), "single": len(range(0, args.single, 4))}
    cfg = fh.pulid_config(sum(n_ca.values()))
    ca_sd = fh.pulid_state_dict(cfg, torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        handle = fh.pulid_handle(pulid_nodes, ca_sd, Path(tmp))
    theirs.pulid_ca = torch.nn.ModuleList(
        official_pulid.PerceiverAttentionCA(dim=fh.HIDDEN, dim_head=128, heads=cfg.ca_heads, kv_dim=cfg.token_dim)
        for _ in range(cfg.num_ca))
    theirs.pulid_ca.load_state_dict({k[len("pulid_ca."):]: v for k, v in ca_sd.items() if k.startswith("pulid_ca.")},
                                    strict=True)
    theirs.eval()
    picked = comfy_flux_math.optimized_attention
    print(f"built in {time.perf_counter() - t0:.0f} s; ComfyUI attention with --cpu: {picked.__name__}; "
          f"{cfg.num_ca} CA modules; torch threads {torch.get_num_threads()}")

    identity = fh.random_identity(handle)
    left = torch.zeros(1, args.size, args.size)
    left[..., : args.size // 2] = 1.0
    models = {
        "plain": plain,
        "apply": fh.apply(pulid_nodes, plain, handle, identity),
        "apply x2 mask": fh.apply(pulid_nodes, fh.apply(pulid_nodes, plain, handle, identity, mask=left), handle,
                                  identity, mask=1.0 - left),
        "inactive": fh.apply(pulid_nodes, plain, handle, identity, start_step=1, end_step=2),  # a 1-step run
    }
    timers = fh.Timers()
    for flux in (ours, theirs):
        fh.time_flux(timers, flux)
        timers.add([flux], "model call")
    for timed_ca in (handle.model.pulid_ca, theirs.pulid_ca):
        timers.add(timed_ca[:n_ca["double"]], "ca double")
        timers.add(timed_ca[n_ca["double"]:], "ca single")

    inputs = fh.Inputs(args.size, args.text_tokens)
    clocks: dict[str, fh.Clock] = defaultdict(fh.Clock)

    def comfy_case(model, attention):
        def run():
            comfy_flux_math.optimized_attention = attention
            return fh.sample(model, inputs, steps=1, cfg=1.0)
        return run

    cases = {name: timers.timing(clocks[name], comfy_case(m, picked)) for name, m in models.items()}
    if args.sdpa:
        for name in ("plain", "apply"):
            cases[f"{name} sdpa"] = timers.timing(clocks[f"{name} sdpa"],
                                                  comfy_case(models[name], comfy_attention.attention_pytorch))

    grid = args.size // 16
    img_ids = torch.zeros(grid, grid, 3)
    img_ids[..., 1] = torch.arange(grid)[:, None]
    img_ids[..., 2] = torch.arange(grid)[None, :]
    gen = torch.Generator().manual_seed(4)
    official_inputs = dict(img=torch.randn(1, grid * grid, 64, generator=gen), img_ids=img_ids.reshape(1, -1, 3),
                           txt=inputs.positive[0][0], txt_ids=torch.zeros(1, args.text_tokens, 3),
                           timesteps=torch.tensor([1.0]), y=inputs.positive[0][1]["pooled_output"],
                           guidance=torch.tensor([3.5]), id_weight=1.0)
    cases["official plain"] = timers.timing(clocks["official plain"], lambda: theirs(**official_inputs, id=None))
    cases["official"] = timers.timing(clocks["official"], lambda: theirs(**official_inputs, id=identity.cond))

    shares = defaultdict(list)
    run_extra = defaultdict(list)

    def on_round(r, seconds):
        if r < 0:
            ca_calls = {name: clocks[name].calls["ca double"] + clocks[name].calls["ca single"] for name in clocks}
            print(f"warm-up: CA module calls per case {dict(ca_calls)}", flush=True)
            if not ca_calls["apply"] or ca_calls["inactive"]:
                raise SystemExit("the Apply cases did not inject as set up (see the CA calls above)")
            return
        for name, base in (("apply", "plain"), ("apply x2 mask", "plain"), ("official", "official plain")):
            shares[f"{name}: injection (outside FLUX's modules, minus plain)"].append(
                (outside(clocks[name]) - outside(clocks[base])) / clocks[name].seconds["model call"])
        for name in ("apply", "official"):
            seconds_of = clocks[name].seconds
            shares[f"{name}: CA modules"].append(
                (seconds_of["ca double"] + seconds_of["ca single"]) / seconds_of["model call"])
            base = "plain" if name == "apply" else "official plain"
            shares[f"{name}: scaled to FLUX.1-dev (19 + 38 blocks, 20 CA)"].append(
                scaled_share(clocks[name], clocks[base], n_ca))
        shares["inactive: wrapper and patches (outside FLUX's modules, minus plain)"].append(
            (outside(clocks["inactive"]) - outside(clocks["plain"])) / clocks["plain"].seconds["model call"])
        shares["inactive: scaled to FLUX.1-dev (19 + 38 blocks, 20 patched)"].append(
            scaled_share(clocks["inactive"], clocks["plain"], n_ca))
        for name in ("apply", "inactive"):
            run_extra[name].append(per_run(clocks[name]) - per_run(clocks["plain"]))
        print(method.round_line(r, args.rounds, seconds), flush=True)

    times = method.paired_rounds(cases, rounds=args.rounds, warmup=args.warmup, on_round=on_round)
    machine = method.Machine.now()

    tokens = (args.size // 16) ** 2
    ideal = ca_flops(tokens, cfg.num_ca) / flux_flops(tokens, args.text_tokens, args.double, args.single)
    dev_ideal = ca_flops(tokens, 20) / flux_flops(tokens, args.text_tokens, 19, 38)
    print(f"\nFLUX.1 width, {args.double} double + {args.single} single blocks, {args.size}x{args.size} "
          f"({tokens} image + {args.text_tokens} text tokens), fp32 CPU, {args.rounds} paired rounds; "
          f"FLOP ideal {100 * ideal:.2f} % here, {100 * dev_ideal:.2f} % for FLUX.1-dev")
    pairs = [("apply", "plain", None), ("official", "official plain", None), ("apply x2 mask", "plain", None),
             ("inactive", "plain", 0.002)]
    if args.sdpa:
        pairs.insert(1, ("apply sdpa", "plain sdpa", None))
    for variant, base, target in pairs:
        c = method.Comparison(times[base], times[variant])
        print("  " + c.line(f"{variant} vs {base}", machine))
        method.print_verdict(f"{variant} vs {base}", c.verdict(target=target))
    print("  in-situ shares of the same forward:")
    for label, values in shares.items():
        print("    " + method.share_line(label, values, machine))
    for name, values in run_extra.items():
        spread = method.Spread.of(values)
        print(f"    {name}: once per sampling run, outside the model calls: {spread.median:+.3f} s "
              f"[{spread.low:+.3f}, {spread.high:+.3f}] (sampler, model loading, run wrapper; not per step)")
    ours_vs_official = method.Spread.of([a - o for a, o in zip(
        shares["apply: injection (outside FLUX's modules, minus plain)"],
        shares["official: injection (outside FLUX's modules, minus plain)"])])
    method.print_verdict("in-situ, ours minus official share (target: no more than official)",
                         method.judge(ours_vs_official, target=0.0, more_work=False))
    method.print_verdict("inactive identity in-situ, scaled to FLUX.1-dev (target < 0.2 %)",
                         method.judge(method.Spread.of(shares["inactive: scaled to FLUX.1-dev (19 + 38 blocks, "
                                                              "20 patched)"]), target=0.002, more_work=False))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"  peak resident memory {peak_gb:.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
