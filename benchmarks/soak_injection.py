"""Soak of Apply PuLID: R sampling runs in one ComfyUI whose Apply settings change every run, nothing growing.

    /path/to/ComfyUI/venv/bin/python benchmarks/soak_injection.py --comfyui /path/to/ComfyUI [--runs 200]

ComfyUI's modules in this process (benchmarks/flux_harness.py): a FLUX with random weights at FLUX.1's width
(1 double + 1 single block) loaded as UNETLoader loads a file, a random PuLID file loaded by the loader
node's handle, Apply by the node's own function, sampling through comfy.sample (what KSampler calls).
Every other run is plain (the same seed, latent and prompt, no Apply); the runs between cycle through Apply
settings drawn with a fixed seed: one identity or two (two Apply nodes with left and right masks), an
optional mask on one, weights from -1 to 3, step windows and percent windows, CFG 1 or 3.5, and a new
identity every run. Every plain result must be bit-identical to the first one.

After each run it samples the process's RSS, model management's loaded models, the live Injection and
ModelPatcher objects (after a garbage collection), and the pack's caches: the loaders' (nodes.common), the
PuLID model's uncond tokens and the call-signature cache. Growth per 100 runs after the warm-up is the
median and min/max over --blocks blocks, judged against BOUNDS (see docs/benchmarks.md, "Soak"); the exit
status is 1 when a plain run differs, a count goes above its ceiling (the report's problems) or a growth is
clearly above its bound.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import flux_harness as fh  # noqa: E402
import method  # noqa: E402
import soak_common  # noqa: E402

SIZE, TEXT_TOKENS, STEPS = 64, 16, 3
# Growth per 100 runs after the warm-up. RSS: the long run's median plus three times its half-spread, rounded
# up to 1 MiB (docs/benchmarks.md, "Soak"); the counts are exact: a run leaves nothing of its Apply behind.
BOUNDS = {"rss_mib": 1.0, "loaded_models": 0.0, "injections": 0.0, "patchers": 0.0, "loader_cache": 0.0,
          "uncond_cache": 0.0, "signature_cache": 0.0}
# Never above, at any sample: FLUX and the CA modules; the Apply nodes of the last run (model management may
# still hold its patched model); one uncond entry per dtype and device.
CEILINGS = {"loaded_models": 2, "injections": 2, "uncond_cache": 1}


@dataclass(frozen=True)
class Setting:
    """One run's Apply nodes (none: plain) and CFG."""
    applies: tuple = ()
    cfg: float = 1.0

    def label(self) -> str:
        if not self.applies:
            return "plain"
        parts = [",".join(f"{k}={v}" for k, v in apply.items() if k != "identity_seed") for apply in self.applies]
        return f"cfg {self.cfg:g}: " + " | ".join(parts)


def settings(runs: int, seed: int) -> list[Setting]:
    """Plain, Apply, plain, Apply, ...: each Apply run drawn anew (identity seed = run number)."""
    rng = random.Random(seed)
    out = []
    for run in range(runs):
        if run % 2 == 0:
            out.append(Setting())
            continue
        two = rng.random() < 0.4
        masks = ("left", "right") if two else (rng.choice((None, "left", "right")),)
        applies = []
        for i, mask in enumerate(masks):
            apply = {"identity_seed": 1000 * run + i, "weight": rng.choice((-1.0, 0.5, 1.0, 1.3, 3.0)), "mask": mask}
            if rng.random() < 0.5:
                start = rng.randrange(STEPS)
                apply.update(timing="steps", start_step=start, end_step=rng.choice((start + 1, 10000)))
            else:
                start = rng.choice((0.0, 0.2, 0.5))
                apply.update(timing="percent", start_percent=start, end_percent=rng.choice((start + 0.3, 1.0)))
            applies.append(apply)
        out.append(Setting(tuple(applies), rng.choice((1.0, 3.5))))
    return out


def region(name: str | None) -> torch.Tensor | None:
    if name is None:
        return None
    mask = torch.zeros(SIZE, SIZE)
    mask[:, slice(0, SIZE // 2) if name == "left" else slice(SIZE // 2, SIZE)] = 1.0
    return mask


class Probe:
    """What is sampled after each run."""

    def __init__(self, pulid_nodes, handle):
        import comfy.model_management
        import comfy.model_patcher
        self.mm, self.patcher_class = comfy.model_management, comfy.model_patcher.ModelPatcher
        self.handle = handle
        self.common = sys.modules[f"{fh.PACKAGE}.nodes.common"]
        self.injection = sys.modules[f"{fh.PACKAGE}.face_migration.injection"]

    def sample(self) -> dict[str, float]:
        gc.collect()
        live = gc.get_objects()
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return {
            "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
            "loaded_models": len(self.mm.current_loaded_models),
            "injections": sum(1 for o in live if isinstance(o, self.injection.Injection)),
            "patchers": sum(1 for o in live if isinstance(o, self.patcher_class)),
            "loader_cache": len(self.common._loaded),
            "uncond_cache": len(self.handle.model._uncond_cache),
            "signature_cache": self.injection._call_signature.cache_info().currsize,
        }


@dataclass
class Report:
    machine: str
    runs: int
    warmup: int
    seconds: float
    plain_identical: bool
    first_plain: str
    start: dict = field(default_factory=dict)  # before the first run
    samples: list = field(default_factory=list)  # [(run, sample)] from the end of the warm-up on
    growth: dict = field(default_factory=dict)
    verdicts: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)


def soak(options) -> Report:
    fh.import_comfyui(options.comfyui, cpu=True)
    pulid_nodes = fh.import_pack()
    machine = method.Machine.now()
    model = fh.load_flux(fh.flux_state_dict(1, 1, torch.float32))
    with tempfile.TemporaryDirectory() as workdir:
        handle = fh.pulid_handle(pulid_nodes, fh.pulid_state_dict(fh.pulid_config(2), torch.float32), Path(workdir))
        inputs = fh.Inputs(SIZE, TEXT_TOKENS)
        probe = Probe(pulid_nodes, handle)
        plan = settings(options.runs, options.seed)
        warmup = min(options.warmup, len(plan) // 4)
        start = probe.sample()
        samples, first_plain, problems, started = [], None, [], time.monotonic()
        for run, setting in enumerate(plan):
            patched = model
            for apply in setting.applies:
                apply = dict(apply)
                identity = fh.random_identity(handle, seed=apply.pop("identity_seed"))
                patched = pulid_nodes.apply_pulid(
                    patched, handle, identity, weight=apply.pop("weight"), timing=apply.pop("timing"),
                    start_step=apply.pop("start_step", 0), end_step=apply.pop("end_step", 10000),
                    start_percent=apply.pop("start_percent", 0.0), end_percent=apply.pop("end_percent", 1.0),
                    uncond_id="uncond ID", mask=region(apply.pop("mask")))
            latent = fh.sample(patched, inputs, STEPS, setting.cfg)
            del patched
            if not setting.applies:
                if first_plain is None:
                    first_plain = latent
                elif not torch.equal(latent, first_plain):
                    problems.append(f"run {run}: the plain result differs from the first plain run by up to "
                                    f"{(latent - first_plain).abs().max().item():.3g}")
            if run + 1 == warmup or (run + 1 > warmup and (run + 1 - warmup) % max(1, (len(plan) - warmup)
                                                                                   // options.blocks) == 0):
                samples.append((run + 1, probe.sample()))
                print(f"  run {run + 1}/{len(plan)} ({setting.label()}), {time.monotonic() - started:.0f} s: "
                      f"{json.dumps(samples[-1][1])}", flush=True)
                if len(samples) > 2 and time.monotonic() - started > 60 * options.max_minutes:
                    print(f"  stopped after {run + 1} runs: --max-minutes {options.max_minutes:g} is over")
                    break
        report = Report(machine.line(), run + 1, warmup, time.monotonic() - started, not problems,
                        digest(first_plain), start, samples)
    report.problems = problems
    judge(report)
    return report


def digest(latent: torch.Tensor) -> str:
    import hashlib
    return hashlib.sha256(latent.contiguous().numpy().tobytes()).hexdigest()[:16]


def judge(report: Report) -> None:
    for metric, bound in BOUNDS.items():
        spread = soak_common.growth(report.samples, metric, 100)
        report.growth[metric] = asdict(spread)
        report.verdicts[metric] = soak_common.verdict(spread, bound)
    for metric, ceiling in CEILINGS.items():
        highest = max(sample[metric] for _, sample in report.samples)
        if highest > ceiling:
            report.problems.append(f"{metric} reached {highest}, above its ceiling {ceiling}")


def print_report(report: Report) -> None:
    print(f"soak of Apply PuLID: {report.runs} sampling runs ({report.warmup} warm-up; every other one plain), "
          f"{report.seconds:.0f} s  {report.machine}")
    print(f"  plain runs bit-identical to the first ({report.first_plain}): {report.plain_identical}")
    start, warm, end = report.start, report.samples[0][1], report.samples[-1][1]
    for metric, spread in report.growth.items():
        print(soak_common.metric_line(metric, (start[metric], warm[metric], end[metric]), spread, "100 runs",
                                      f", bound {BOUNDS[metric]:g}: {report.verdicts[metric].upper()}"))
    soak_common.print_problems(report.problems)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (with main.py)")
    parser.add_argument("--runs", type=int, default=200, help="sampling runs in all (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="runs before the first sample (default 20)")
    parser.add_argument("--blocks", type=int, default=10, help="samples after the warm-up (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the settings")
    parser.add_argument("--max-minutes", type=float, default=120.0,
                        help="stop at the first sample after this long (default 120; at least 2 samples after the "
                             "warm-up)")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    return parser.parse_args(argv)


def main() -> int:
    options = parse_args()
    report = soak(options)
    print_report(report)
    if options.json:
        options.json.write_text(json.dumps(asdict(report)))
    return 1 if report.problems or method.FAIL in report.verdicts.values() else 0


if __name__ == "__main__":
    sys.exit(main())
