#!/usr/bin/env python3
"""Encode Face latency per reference photo on the CPU (or a GPU), after load, on the shared method.

What runs is the library's encode path (face_migration.face.pipeline.encode_identity, as Encode Face calls it)
on one 1024 px photo, with FULL-SIZE networks and random weights: EVA02-CLIP-L-14-336, BiSeNet on the 512
crop, RetinaFace-ResNet50 on the photo at its own resolution (official alignment; its class head says "no
face", so the landmarks fall back to SCRFD's and NMS gets nothing: the network's cost is all there), the
PuLID IDFormer (PulidConfig defaults). SCRFD and ArcFace are stand-ins with the real networks' multiply-adds
(benchmarks/face_standins.py) run by the pack's onnxruntime loaders.

RetinaFace and BiSeNet are folded (BatchNorms into the convolutions) as their loaders hand them to the
pipeline. Everything measured runs on one long-lived worker thread, as ComfyUI runs a node on its prompt
worker thread (--thread main for the main thread: glibc serves the two from different arenas, which changes
the page faults).

Paired rounds (benchmarks/method.py): encode with the fast alignment, with the official (RetinaFace)
alignment, the EVA tower alone and RetinaFace alone. Printed with their spread, the machine's matmul rate and
load: the time of each, the ratio encode / EVA alone (target <= 1.15), RetinaFace against its target
(<= 1.5 s on 2 cores), each with its floor on this machine (method.flop_floor: the FLOPs at the fastest rate
measured in the run, the matmul's or a stage's; for the ratio, every stage but EVA at that rate); then per
stage, as the pipeline runs them: time, FLOPs and achieved GFLOP/s, system time and page faults
(resource.getrusage). The IDFormer runs the cond pass only:
its uncond tokens are cached per model after the first encode. --layouts adds RetinaFace and BiSeNet with
contiguous (NCHW) against channels-last inputs, the layout the pack uses on the CPU. --references N adds one
encode of N photos (EVA in batches of pipeline.EVA_BATCH), compared per photo with the one-photo encode.

    python benchmarks/bench_encode_cpu.py                        # CPU, 2 threads
    python benchmarks/bench_encode_cpu.py --allocator thp        # torch's huge-page CPU buffers (docs/benchmarks.md)
    python benchmarks/bench_encode_cpu.py --device cuda          # bf16 EVA / IDFormer as the node on a GPU

Thread counts and the allocator are set in the environment before torch is imported (--allocator restarts
the process with the variables of ALLOCATORS set: glibc and torch read them once, at start-up). Needs torch,
numpy, onnx, onnxruntime; ~3 GB of RAM.
"""
from __future__ import annotations

import argparse
import os
import sys

# Read once, at start-up. glibc: buffers up to 32 MiB from the heap and no trimming, so freed activation
# buffers are reused instead of returned to the kernel and faulted in again (this helps the main thread only:
# a worker thread's large buffers are fresh mappings either way, measured in docs/benchmarks.md). torch: CPU buffers
# of 2 MiB and more aligned to, and advised as, transparent huge pages (one fault per 2 MiB instead of per
# 4 KiB, where /sys/kernel/mm/transparent_hugepage/enabled says "madvise" or "always").
GLIBC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": str(2 ** 40)}
THP = {"THP_MEM_ALLOC_ENABLE": "1"}
ALLOCATORS = {"default": {}, "glibc": GLIBC, "thp": THP, "glibc+thp": {**GLIBC, **THP}}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime CPU threads (default 2)")
    ap.add_argument("--allocator", default="default", choices=tuple(ALLOCATORS),
                    help="glibc / torch allocator settings for this run (see ALLOCATORS)")
    ap.add_argument("--thread", default="worker", choices=("worker", "main"),
                    help="run the measured work on a worker thread, as ComfyUI does (default), or the main one")
    ap.add_argument("--photo-size", type=int, default=1024, help="square photo side in pixels (default 1024)")
    ap.add_argument("--rounds", type=int, default=10, help="paired rounds after one warm-up (default 10)")
    ap.add_argument("--layouts", action="store_true", help="also compare NCHW and channels-last convolutions")
    ap.add_argument("--references", type=int, default=1,
                    help="also encode this many photos in one call (EVA in batches), compared per photo")
    return ap.parse_args()


ARGS = parse_args()
# Before torch (and its OpenMP runtime) loads: later changes have no effect.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
if any(os.environ.get(k) != v for k, v in ALLOCATORS[ARGS.allocator].items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ALLOCATORS[ARGS.allocator]})

import resource  # noqa: E402
import tempfile  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import face_standins  # noqa: E402
import method  # noqa: E402
from face_migration.face import pipeline  # noqa: E402
from face_migration.face.align import arcface_crop, ffhq_crop  # noqa: E402
from face_migration.face.bisenet import BiSeNet, normalize  # noqa: E402
from face_migration.face.conv_fold import fold_batch_norms  # noqa: E402
from face_migration.face.detection import load_scrfd  # noqa: E402
from face_migration.face.eva_clip import EvaVisionConfig, EvaVisionTower, preprocess  # noqa: E402
from face_migration.face.recognition import load_arcface  # noqa: E402
from face_migration.face.resample import limit_long_edge  # noqa: E402
from face_migration.face.retinaface import RetinaFace, detect_faces, to_network_input  # noqa: E402
from face_migration.pulid.model import PulidConfig, PulidFlux  # noqa: E402

TARGET_RATIO = 0.15  # encode (fast alignment) <= 1.15 x the EVA stage alone
TARGET_RETINAFACE_S = 1.5
EVA_STAGE, RETINAFACE_STAGE = "EVA02-CLIP-L 336", "RetinaFace landmarks"


def _random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights N(0, 0.02), norm scales 1, biases 0: finite activations through deep stacks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return module.eval().requires_grad_(False)


def build_models(device: torch.device, dtype: torch.dtype, providers: str, folder: str):
    (scrfd, scrfd_gmac), (arcface, arcface_gmac) = face_standins.scrfd_proxy(), face_standins.arcface_proxy()
    paths = {"scrfd": os.path.join(folder, "scrfd_10g_bnkps.onnx"), "arcface": os.path.join(folder, "glintr100.onnx")}
    onnx.save(scrfd, paths["scrfd"])
    onnx.save(arcface, paths["arcface"])
    eva = _random_(EvaVisionTower(EvaVisionConfig()), 1).to(device, dtype)
    parser = fold_batch_norms(_random_(BiSeNet(), 2)).to(device)
    landmarker = fold_batch_norms(_random_(RetinaFace(), 3))
    with torch.no_grad():  # "no face" everywhere (see the module docstring)
        for head in landmarker.ClassHead:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.copy_(torch.tensor([5.0, -5.0]).repeat(2))
    landmarker.to(device)
    pulid = _random_(PulidFlux(PulidConfig(num_ca=0)), 4).to(device, dtype)
    common = (load_scrfd(paths["scrfd"], providers), load_arcface(paths["arcface"], providers), eva, parser)
    models = {"fast": pipeline.FaceModels(*common, None, device, dtype),
              "official": pipeline.FaceModels(*common, landmarker, device, dtype)}
    return models, pulid, {"SCRFD detect": 2e9 * scrfd_gmac, "ArcFace embed": 2e9 * arcface_gmac}


def bench_photo(side: int) -> np.ndarray:
    """A photo of the benchmark's size (content is irrelevant to the stand-ins and random networks)."""
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)


class Usage:
    """Wall time, system time and page faults of a piece of work (resource.getrusage of this process)."""

    def __init__(self, sync):
        self.sync = sync

    def __call__(self, fn):
        self.sync()
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = fn()
        self.sync()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        return out, {"wall": wall, "sys": after.ru_stime - before.ru_stime,
                     "faults": (after.ru_minflt - before.ru_minflt) + (after.ru_majflt - before.ru_majflt)}


@torch.no_grad()
def stages(models: pipeline.FaceModels, pulid: PulidFlux, photo: np.ndarray, dtype, usage: Usage
           ) -> tuple[dict[str, dict], dict[str, object]]:
    """encode_reference's stages + the IDFormer, each measured on its own, labelled as it runs. Also returns
    the calls that make each torch stage, for the FLOP count."""
    dev = models.device
    out, calls = {}, {}

    def run(label, fn):
        value, out[label] = usage(fn)
        calls[label] = fn
        return value

    image = run("pre-resize to 1024", lambda: limit_long_edge(photo, pipeline.MAX_EDGE))
    boxes, kps = run("SCRFD detect", lambda: models.detector.detect(image))
    if not len(boxes):
        raise SystemExit("the SCRFD stand-in found no face: benchmarks/face_standins.py and the detector disagree")
    if models.landmarker is not None:
        run(RETINAFACE_STAGE, lambda: detect_faces(models.landmarker, image))
    run("ArcFace embed", lambda: models.recognizer.embed(arcface_crop(image, kps[0])[0][None]))
    crop, _ = run("FFHQ 512 alignment", lambda: ffhq_crop(image, kps[0]))
    view = run("BiSeNet parse + grey", lambda: pipeline.eva_input(models.parser, crop, dev))
    pixels = preprocess(view, models.eva.cfg.image_size).to(dev, dtype)
    head, hidden = run(EVA_STAGE, lambda: models.eva(pixels))
    id_vector = torch.cat([torch.zeros(1, 512, device=dev), head.float()], dim=1)
    run("IDFormer cond (uncond cached)", lambda: pulid.encode(id_vector, [h.float() for h in hidden], dtype))
    run("preview", lambda: pipeline.make_preview(image, boxes, 0, view))
    return out, calls


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def spread_text(values, scale=1.0, fmt="{:.3f}") -> str:
    s = method.Spread.of([v * scale for v in values])
    return f"{fmt.format(s.median)} [{fmt.format(s.low)}, {fmt.format(s.high)}]"


def main() -> int:
    args = ARGS
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure for --device cuda")
        return 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    # As Encode Face: bf16 EVA and IDFormer on a GPU, fp32 on the CPU; parsing nets always fp32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    usage = Usage(sync)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker")

    def on_thread(fn):
        """fn run where the measured work runs (grad mode is per thread: off there too)."""
        def no_grad_fn():
            with torch.no_grad():
                return fn()
        return no_grad_fn if args.thread == "main" else (lambda: worker.submit(no_grad_fn).result())

    photo = bench_photo(args.photo_size)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        models, pulid, onnx_flops = build_models(device, dtype, "CUDA" if device.type == "cuda" else "CPU", folder)
        load_s = time.perf_counter() - t0
    allocator = {k: os.environ.get(k, "unset") for k in {**GLIBC, **THP}}
    print(f"device {args.device}, compute dtype {str(dtype).split('.')[-1]}, photo {args.photo_size} px, torch "
          f"{torch.__version__}, {on_thread(torch.get_num_threads)()} torch threads (OMP_NUM_THREADS "
          f"{os.environ['OMP_NUM_THREADS']}) on the {args.thread} thread, allocator {args.allocator} {allocator}; "
          f"models built in {load_s:.1f} s")

    image = limit_long_edge(photo, pipeline.MAX_EDGE)
    eva_pixels = torch.rand(1, 3, 336, 336).to(device, dtype)

    def encode(mode, photos=1):
        return lambda: pipeline.encode_identity(models[mode], pulid, "bench", [photo] * photos, encoder_dtype=dtype)

    cases = {"encode, fast alignment": encode("fast"), "encode, official alignment": encode("official"),
             "EVA02-CLIP-L alone": lambda: models["fast"].eva(eva_pixels),
             "RetinaFace alone": lambda: detect_faces(models["official"].landmarker, image)}
    several = f"encode, fast, {args.references} photos"
    if args.references > 1:
        cases[several] = encode("fast", args.references)
    if args.layouts:
        retina_x = to_network_input(image, device, torch.float32)
        bisenet_x = normalize(torch.rand(1, 3, 512, 512, device=device))
        for name, net, x in (("RetinaFace", models["official"].landmarker, retina_x),
                             ("BiSeNet", models["fast"].parser, bisenet_x)):
            cases[f"{name} net, NCHW"] = lambda net=net, x=x: net(x)
            last = x.contiguous(memory_format=torch.channels_last)
            cases[f"{name} net, channels-last"] = lambda net=net, x=last: net(x)
    per_case = {name: [] for name in cases}
    measured = {name: on_thread(lambda name=name, fn=fn: per_case[name].append(usage(fn)[1]))
                for name, fn in cases.items()}
    times = method.paired_rounds(measured, rounds=args.rounds, warmup=1, on_round=lambda r, seconds: print(
        method.round_line(r, args.rounds, seconds), flush=True))
    stage_runs = [on_thread(lambda: stages(models["official"], pulid, photo, dtype, usage))() for _ in range(3)]
    machine = method.Machine.now()
    flops = dict(onnx_flops)
    for label, fn in stage_runs[0][1].items():
        if label not in flops:
            flops[label] = on_thread(lambda fn=fn: count_flops(fn))()

    print(f"\n{args.rounds} paired rounds  {machine.line()}")
    for name, runs in per_case.items():
        runs = runs[1:]  # the warm-up round
        print(f"  {name:32s} {spread_text(times[name])} s   system {spread_text([r['sys'] for r in runs])} s   "
              f"page faults {spread_text([r['faults'] for r in runs], fmt='{:.0f}')}")
    fast_vs_eva = method.Comparison(times["EVA02-CLIP-L alone"], times["encode, fast alignment"])
    # The fastest arithmetic seen here: the matmul, or a stage (onnxruntime's convolutions can beat torch's matmul).
    stage_rates = {label: flops[label] / method.Spread.of([r[0][label]["wall"] for r in stage_runs]).median
                   for label in flops if flops[label] >= 1e9}
    fastest = max(machine.gflops * 1e9, *stage_rates.values()) / 1e9
    # Floor of the ratio: EVA as measured, every other stage of the fast encode at the fastest rate.
    other_flops = sum(f for label, f in flops.items() if label not in (EVA_STAGE, RETINAFACE_STAGE))
    ratio_floor = method.flop_floor(other_flops, fastest) / method.Spread.of(times["EVA02-CLIP-L alone"]).median
    print("  " + fast_vs_eva.line("encode (fast) vs EVA alone", machine, per="photo"))
    print(f"  floor of encode / EVA here: {1 + ratio_floor:.3f} (the other stages' {other_flops / 1e9:.1f} GFLOP at "
          f"{fastest:.0f} GFLOP/s, the fastest rate of this run; EVA {flops[EVA_STAGE] / 1e9:.1f} GFLOP)")
    method.print_verdict(f"encode (fast) <= {1 + TARGET_RATIO:.2f} x EVA alone",
                         fast_vs_eva.verdict(TARGET_RATIO, floor=ratio_floor))
    official = method.Comparison(times["encode, fast alignment"], times["encode, official alignment"])
    print("  " + official.line("official alignment vs fast", machine, per="photo"))
    retina = method.Spread.of([t / TARGET_RETINAFACE_S - 1 for t in times["RetinaFace alone"]])
    retina_floor_s = method.flop_floor(flops[RETINAFACE_STAGE], fastest)
    print(f"  floor of RetinaFace here: {retina_floor_s:.2f} s ({flops[RETINAFACE_STAGE] / 1e9:.1f} GFLOP at "
          f"{fastest:.0f} GFLOP/s); measured {spread_text(times['RetinaFace alone'])} s")
    method.print_verdict(f"RetinaFace <= {TARGET_RETINAFACE_S} s", method.judge(
        retina, target=0.0, more_work=False, floor=retina_floor_s / TARGET_RETINAFACE_S - 1))
    if args.references > 1:
        batched = method.Comparison(times["encode, fast alignment"], [t / args.references for t in times[several]])
        print("  " + batched.line(f"{args.references} photos in one encode vs one, per photo", machine, per="photo"))
        method.print_verdict(f"{args.references} photos per encode, per photo", batched.verdict(more_work=False))
    if args.layouts:
        for name in ("RetinaFace", "BiSeNet"):
            c = method.Comparison(times[f"{name} net, NCHW"], times[f"{name} net, channels-last"])
            print("  " + c.line(f"{name} network, channels-last vs NCHW", machine, per="call"))
            method.print_verdict(f"{name} channels-last", c.verdict(more_work=False))

    print(f"\nstages of one encode (official alignment), median [min, max] of {len(stage_runs)} runs after the "
          f"rounds  {machine.line()}")
    print(f"  {'stage':32s} {'seconds':>24s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'system s':>9s} {'faults':>8s}")
    for label in stage_runs[0][0]:
        runs = [r[0][label] for r in stage_runs]
        wall = method.Spread.of([r["wall"] for r in runs]).median
        gflop = flops.get(label, 0.0) / 1e9
        rate = f"{gflop / wall:8.1f}" if gflop >= 0.01 else f"{'':8s}"
        print(f"  {label:32s} {spread_text([r['wall'] for r in runs]):>24s} {gflop:8.1f} {rate} "
              f"{method.Spread.of([r['sys'] for r in runs]).median:9.3f} "
              f"{method.Spread.of([r['faults'] for r in runs]).median:8.0f}")
    worker.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
