"""Short soaks (benchmarks/soak_selfhost.py, benchmarks/soak_injection.py) on each ComfyUI of the matrix.

The route: 80 mixed requests, the first 20 a warm-up, against one instance and against two behind nginx (the
committed site file; skipped without an nginx binary): every request answered with a status its kind
allows (none lost), one prompt queued per request that passed the route's checks (none twice), as many run
as the kinds call for, no file left in temp/ or output/, and from the warm-up sample to the end no more than
ROUTE_GROWTH. Apply: 20 sampling runs (every other one plain; the first 5 a warm-up): every plain result
bit-identical to the first, model management and the pack's caches at their ceilings and not growing, RSS
within INJECTION_RSS_MIB.

The bounds come from the long runs in docs/benchmarks.md ("Soak"), not from these short ones. Route: RSS may move by
twice the largest change between two consecutive samples after the warm-up that the long runs showed on an instance
(43 MiB, up and down without a trend); descriptors by twice the 2 that instances opened once after their warm-up and
kept (never more in 3,000 requests); threads not at all. Apply: RSS by 4 MiB, ten times the largest change after the
warm-up in the long run and the trial runs (0.33 MiB). Files in temp/ and output/ and the counts of Apply objects
and caches are exact."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.servers import nginx_binary

REPO = Path(__file__).resolve().parents[2]
ROUTE_GROWTH = {"rss_mib": 86.0, "fds": 4, "threads": 0}
INJECTION_RSS_MIB = 4.0


def benchmark(name: str):
    """A benchmark module by path (benchmarks/ is not a package), as the benchmarks import method.py."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance", "two-behind-nginx"])
def test_route_soak_loses_nothing_runs_nothing_twice_and_leaves_nothing(comfyui, instances):
    if instances == 2 and nginx_binary() is None:
        pytest.skip("no nginx binary (Debian/Ubuntu: apt-get install nginx)")
    soak = benchmark("soak_selfhost")
    options = soak.parse_args(["--comfyui", str(comfyui.path), "--python", comfyui.python, "--requests", "80",
                               "--warmup", "20", "--blocks", "3", "--clients", "4", "--instances", str(instances),
                               "--seed", str(instances)])
    report = soak.soak(options)
    soak.print_report(report)
    assert not report.problems, "\n".join(report.problems)
    answered = sum(report.statuses.values())
    assert answered == report.requests >= 80  # every request accounted for (priming ones included)
    assert report.prompts["ended"] >= 30, report.prompts  # most kinds run their prompt: the soak got that far
    for url, samples in zip(report.growth, report.samples):
        warm, end = samples[1][1], samples[-1][1]
        for metric, bound in ROUTE_GROWTH.items():
            assert end[metric] - warm[metric] <= bound, f"{url}: {metric} {warm[metric]} -> {end[metric]}"
        start = samples[0][1]
        assert (end["temp_files"], end["output_files"]) == (start["temp_files"], start["output_files"])


def test_apply_soak_keeps_the_plain_model_and_grows_nothing(comfyui, tmp_path):
    out = tmp_path / "soak_injection.json"
    done = subprocess.run([comfyui.python, str(REPO / "benchmarks" / "soak_injection.py"), "--comfyui",
                           str(comfyui.path), "--runs", "20", "--warmup", "5", "--blocks", "7", "--json", str(out)],
                          capture_output=True, text=True, timeout=3000)
    sys.stdout.write(done.stdout[-6000:])
    assert out.is_file(), done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["plain_identical"] and not report["problems"], report["problems"]
    counts = [metric for metric in report["growth"] if metric != "rss_mib"]
    warm, end = report["samples"][0][1], report["samples"][-1][1]
    assert {metric: end[metric] - warm[metric] for metric in counts} == {metric: 0 for metric in counts}
    assert end["rss_mib"] - warm["rss_mib"] <= INJECTION_RSS_MIB, (warm["rss_mib"], end["rss_mib"])
    assert end["loaded_models"] >= 1 and done.returncode == 0, done.stdout[-3000:]
