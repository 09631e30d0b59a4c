#!/usr/bin/env python3
"""GPU benchmark: what the Apply node costs a real sampling run of FLUX.1-dev, per step and in memory.

ComfyUI's FLUX.1-dev architecture (19 double + 38 single blocks, hidden 3072) with random weights, loaded as
UNETLoader loads a file (fp16, bf16, or fp8_e4m3fn weights), sampled by ComfyUI's sampler (comfy.sample, euler,
--steps steps) at 1024x1024 with CFG 1 and 3.5, plain against one Apply node (node-built PuLID from a random
file with the real 20 CA modules, identity on every step). Per configuration, in paired rounds
(benchmarks/method.py): extra seconds per step with the ratio's spread and a verdict against the target
(+3 % per step); then, in a separate pass from an empty model cache, every byte ComfyUI loads for the run
(the models model management holds afterwards: FLUX, and with Apply the PuLID modules it was handed) and
the peak VRAM, against the target (+1.0 GB).

    python benchmarks/bench_flux_gpu.py --comfyui /path/to/ComfyUI                  # on a CUDA machine
    python benchmarks/bench_flux_gpu.py --comfyui PATH --device cpu --double 1 --single 1 --size 128 \\
        --text-tokens 32 --steps 1 --rounds 2 --dtypes bf16                        # CPU smoke check of the script

Needs ~2x the FLUX weights in CPU RAM (random weights are made on the CPU, as a file would be read). Without
a ComfyUI folder it says so and exits 0; without a GPU (and no --device cpu) likewise.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import flux_harness as fh  # noqa: E402
import method  # noqa: E402

# Weights as stored: the file's dtype, and UNETLoader's weight_dtype option for fp8.
DTYPES = {"fp16": (torch.float16, None), "bf16": (torch.bfloat16, None), "fp8": (torch.bfloat16, torch.float8_e4m3fn)}
TARGET_STEP = 0.03
TARGET_BYTES = 1.0e9


def loaded_bytes() -> dict[str, int]:
    """Bytes of every model ComfyUI's model management holds loaded now, by model class."""
    import comfy.model_management as mm
    held: dict[str, int] = {}
    for loaded in mm.current_loaded_models:
        name = type(loaded.model.model).__name__
        held[name] = held.get(name, 0) + loaded.model_loaded_memory()
    return held


def memory_pass(model, inputs: fh.Inputs, steps: int, cfg: float, device: torch.device) -> tuple[dict[str, int], int]:
    """(bytes loaded per model class, peak device memory) of one sampling run from an empty model cache."""
    import comfy.model_management as mm
    mm.unload_all_models()
    mm.soft_empty_cache()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fh.sample(model, inputs, steps, cfg)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return loaded_bytes(), peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (env COMFYUI_PATH)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else None, choices=("cuda", "cpu"))
    ap.add_argument("--dtypes", default="fp16,bf16,fp8", help="comma-separated, of: " + ", ".join(DTYPES))
    ap.add_argument("--cfgs", default="1,3.5", help="comma-separated CFG scales")
    ap.add_argument("--double", type=int, default=19)
    ap.add_argument("--single", type=int, default=38)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4, help="sampling steps per timed run")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    if not args.comfyui or not Path(args.comfyui).is_dir():
        print("bench_flux_gpu: skipped, no ComfyUI folder given (--comfyui / COMFYUI_PATH).")
        return 0
    if args.device is None:
        print("bench_flux_gpu: skipped, no GPU here (pass --device cpu with a small --double/--single to test it).")
        return 0
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    fh.import_comfyui(Path(args.comfyui), cpu=device.type == "cpu")
    pulid_nodes = fh.import_pack()
    n_ca = len(range(0, args.double, 2)) + len(range(0, args.single, 4))
    with tempfile.TemporaryDirectory() as tmp:
        handle = fh.pulid_handle(pulid_nodes, fh.pulid_state_dict(fh.pulid_config(n_ca), torch.bfloat16), Path(tmp))
    identity = fh.random_identity(handle)
    inputs = fh.Inputs(args.size, args.text_tokens)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke check only: no GPU figure)"
    print(f"device {where}; FLUX {args.double} double + {args.single} single blocks, {args.size}x{args.size}, "
          f"{args.text_tokens} text tokens, {args.steps} euler steps per run; PuLID {n_ca} CA modules (bf16 file)")

    for dtype_name in args.dtypes.split(","):
        file_dtype, weight_dtype = DTYPES[dtype_name]
        t0 = time.perf_counter()
        plain = fh.load_flux(fh.flux_state_dict(args.double, args.single, file_dtype), weight_dtype)
        applied = fh.apply(pulid_nodes, plain, handle, identity)
        print(f"\n[{dtype_name} weights: FLUX weights stored as {plain.model.get_dtype()}, built in "
              f"{time.perf_counter() - t0:.0f} s]")
        for cfg in (float(c) for c in args.cfgs.split(",")):
            cases = {"plain": lambda: fh.sample(plain, inputs, args.steps, cfg),
                     "apply": lambda: fh.sample(applied, inputs, args.steps, cfg)}
            if device.type == "cuda":  # time what the GPU did, not when the launch returned
                cases = {k: (lambda f=f: (f(), torch.cuda.synchronize(device))) for k, f in cases.items()}
            times = method.paired_rounds(cases, rounds=args.rounds, warmup=args.warmup)
            machine = method.Machine.now()
            per_step = method.Comparison([t / args.steps for t in times["plain"]],
                                         [t / args.steps for t in times["apply"]])
            print("  " + per_step.line(f"CFG {cfg:g}, Apply vs plain", machine))
            method.print_verdict(f"CFG {cfg:g}, per step (target <= +{100 * TARGET_STEP:.0f} %)",
                                 per_step.verdict(target=TARGET_STEP))
            held_plain, peak_plain = memory_pass(plain, inputs, 1, cfg, device)
            held_apply, peak_apply = memory_pass(applied, inputs, 1, cfg, device)
            extra = sum(held_apply.values()) - sum(held_plain.values())
            print(f"  CFG {cfg:g}, loaded for sampling: plain {held_plain}, with Apply {held_apply} (bytes): "
                  f"+{extra / 1e9:.3f} GB")
            if device.type == "cuda":
                extra_peak = peak_apply - peak_plain
                print(f"  CFG {cfg:g}, peak VRAM: plain {peak_plain / 1e9:.2f} GB, "
                      f"with Apply {peak_apply / 1e9:.2f} GB "
                      f"(+{extra_peak / 1e9:.2f} GB; target <= +{TARGET_BYTES / 1e9:.1f} GB: "
                      f"{'met' if extra_peak <= TARGET_BYTES else 'NOT met'})")
        del plain, applied
    return 0


if __name__ == "__main__":
    sys.exit(main())
