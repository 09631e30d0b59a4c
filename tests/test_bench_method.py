"""The benchmarks' verdict logic: a figure is only a pass when its spread resolves it."""
import importlib.util
import sys
from pathlib import Path

import pytest

METHOD = Path(__file__).resolve().parents[1] / "benchmarks" / "method.py"
_spec = importlib.util.spec_from_file_location("bench_method", METHOD)
method = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = method  # dataclasses look their module up
_spec.loader.exec_module(method)


def comparison(base, ratios):
    return method.Comparison(list(base), [b * r for b, r in zip(base, ratios)])


def test_resolved_effect_passes_its_target():
    c = comparison([10.0] * 10, [1.020, 1.021, 1.019, 1.022, 1.020, 1.018, 1.021, 1.020, 1.019, 1.020])
    assert c.verdict(target=0.03).outcome == method.PASS
    assert c.verdict().outcome == method.RESOLVED
    assert c.extra_seconds.median == pytest.approx(0.2)


def test_spread_larger_than_effect_is_inconclusive_not_pass():
    c = comparison([10.0] * 4, [1.016, 0.97, 1.07, 1.036])
    assert c.verdict().outcome == method.INCONCLUSIVE
    # a target inside the spread cannot be passed either
    assert c.verdict(target=0.03).outcome == method.INCONCLUSIVE


def test_variant_doing_more_work_cannot_be_faster_beyond_its_spread():
    c = comparison([10.0] * 4, [0.70, 0.71, 0.69, 0.70])  # the "-30 %" of a disturbed run
    verdict = c.verdict(target=0.03)
    assert verdict.outcome == method.INCONCLUSIVE and "impossible" in verdict.reason
    # the same numbers are legitimate for a speed-up (more_work=False)
    assert c.verdict(more_work=False).outcome == method.RESOLVED


def test_effect_clearly_above_target_fails():
    c = comparison([10.0] * 4, [1.10, 1.11, 1.09, 1.10])
    assert c.verdict(target=0.03).outcome == method.FAIL


def test_tiny_effect_passes_a_target_its_whole_spread_is_under():
    assert method.judge(method.Spread(0.0005, -0.0003, 0.0012), target=0.002).outcome == method.PASS
    assert method.judge(method.Spread(0.0015, 0.0005, 0.0031), target=0.002).outcome == method.INCONCLUSIVE


def test_paired_rounds_alternate_the_order():
    calls = []
    times = method.paired_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                 rounds=4, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert len(times["a"]) == len(times["b"]) == 4


def test_target_below_the_machines_floor_is_unreachable_whatever_was_measured():
    assert method.flop_floor(150e9, 100.0) == pytest.approx(1.5)
    # 227 GFLOP cannot run in 1.5 s at 128 GFLOP/s: the floor is +18 % over the target, even if a lucky
    # round measured less
    floor = 227e9 / 128e9 / 1.5 - 1
    verdict = method.judge(method.Spread(0.2, 0.17, 0.25), target=0.0, more_work=False, floor=floor)
    assert verdict.outcome == method.UNREACHABLE and "+18.23 %" in verdict.reason
    # a figure below the floor by more than its spread is a disturbed run, not a result
    below = method.judge(method.Spread(-0.05, -0.06, -0.04), target=0.0, more_work=False, floor=floor)
    assert below.outcome == method.INCONCLUSIVE and "below the floor" in below.reason
    # a floor under the target leaves the ordinary verdicts
    assert method.judge(method.Spread(-0.05, -0.06, -0.04), target=0.0, more_work=False,
                        floor=-0.2).outcome == method.PASS
    c = comparison([10.0] * 4, [1.30, 1.31, 1.29, 1.30])
    assert c.verdict(target=0.15, floor=0.25).outcome == method.UNREACHABLE
    assert c.verdict(target=0.15, floor=0.05).outcome == method.FAIL
