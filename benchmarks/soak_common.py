"""What the two soaks share: growth between consecutive samples, its verdict against a bound, and the printed
lines. Imported by path like method.py (benchmarks/ is not a package)."""
from __future__ import annotations

import method


def growth(samples: list[tuple[int, dict]], metric: str, per: int) -> method.Spread:
    """Growth of `metric` per `per` units (requests, runs) between consecutive (units done, sample) pairs."""
    rates = [per * (b[metric] - a[metric]) / (nb - na) for (na, a), (nb, b) in zip(samples, samples[1:]) if nb > na]
    return method.Spread.of(rates)


def verdict(spread: method.Spread, bound: float) -> str:
    """A pass when even the largest growth stays within the bound, a fail when even the smallest exceeds it."""
    if spread.high <= bound:
        return method.PASS
    if spread.low > bound:
        return method.FAIL
    return method.INCONCLUSIVE


def metric_line(metric: str, values: tuple[float, float, float], spread: dict, per: str, judged: str = "") -> str:
    """One metric: its value at the start, after the warm-up and at the end, and its growth with the spread."""
    start, warm, end = values
    return (f"    {metric:16s} start {start:9.1f}  warm {warm:9.1f}  end {end:9.1f}  growth per {per} "
            f"{spread['median']:+.2f} [{spread['low']:+.2f}, {spread['high']:+.2f}]{judged}")


def print_problems(problems: list[str]) -> None:
    print(f"  problems: {len(problems)}")
    for problem in problems[:50]:
        print(f"    {problem}")
