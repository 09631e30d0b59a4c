"""The one measuring method every benchmark of this pack uses.

- Paired rounds: every round runs each case once, in an order that alternates (A B ... then ... B A), so
  a slow drift of a shared machine hits both sides of a comparison alike.
- A comparison is judged on the per-round ratio variant / base: its median, and its min and max over the
  rounds as the spread. The headline is the extra seconds per call (median of the per-round differences).
- Every figure is printed with the machine's fp32 matmul rate and load average, so absolute times only
  ever compare with the speed of the machine beside them.
- A verdict is "inconclusive", never a pass, when the spread is larger than the effect, or when the result
  is physically impossible (a variant that does strictly more work coming out faster than its base by
  more than the spread).
- A target below the work's floor on this machine (its FLOPs at the fastest rate measured there: the matmul
  rate, or a faster stage of the same run) is "unreachable": no change that keeps the computation meets it.

Scripts import this module by path (benchmarks/ is not a package); the tests import it the same way.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

INCONCLUSIVE = "inconclusive"
PASS = "pass"
FAIL = "fail"
RESOLVED = "resolved"
UNREACHABLE = "unreachable"


def matmul_gflops(size: int = 1024, repeats: int = 8) -> float:
    """Achieved fp32 GFLOP/s of a square matmul on this machine now (best of `repeats`), with torch's threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


@dataclass(frozen=True)
class Machine:
    """What a figure is measured against: the CPU's speed and how busy the machine was."""
    gflops: float
    load: tuple[float, float, float]
    threads: int
    date: str
    cpu: str

    @classmethod
    def now(cls) -> "Machine":
        import torch

        return cls(matmul_gflops(), os.getloadavg(), torch.get_num_threads(),
                   datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   platform.processor() or platform.machine())

    def line(self) -> str:
        return (f"[machine: fp32 matmul {self.gflops:.0f} GFLOP/s, {self.threads} threads, load average "
                f"{self.load[0]:.2f} {self.load[1]:.2f} {self.load[2]:.2f}, {self.date}]")


def paired_rounds(cases: dict[str, Callable[[], object]], rounds: int = 10, warmup: int = 1,
                  on_round: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each case, one entry per timed round; the order is reversed every other round."""
    if rounds < 2:
        raise ValueError("paired rounds need at least 2 rounds (one in each order)")
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        this_round = {}
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            cases[name]()
            this_round[name] = time.perf_counter() - start
        if r >= warmup:
            for name, seconds in this_round.items():
                times[name].append(seconds)
        if on_round is not None:
            on_round(r - warmup, this_round)
    return times


@dataclass(frozen=True)
class Spread:
    """Median and min/max of a list of per-round values."""
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values))

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Verdict:
    outcome: str  # PASS, FAIL, RESOLVED or INCONCLUSIVE
    reason: str

    def __str__(self) -> str:
        return f"{self.outcome.upper()}: {self.reason}"


def judge(effect: Spread, target: float | None = None, more_work: bool = True,
          floor: float | None = None) -> Verdict:
    """Judge a relative effect (ratio - 1 per round: median, min, max).

    more_work: the variant does strictly more work than its base, so a clearly negative effect is a
    measurement artefact. target: the largest acceptable effect; without one, the verdict only says whether
    the effect is resolved from zero. floor: the smallest effect the work allows on this machine (see
    flop_floor); a target below it is UNREACHABLE whatever was measured."""
    half = effect.half_width
    if floor is not None and effect.median < floor - half:
        return Verdict(INCONCLUSIVE, f"impossible: {100 * effect.median:+.2f} % is below the floor "
                                     f"{100 * floor:+.2f} % by more than the spread (±{100 * half:.2f} %)")
    if floor is not None and target is not None and floor > target:
        return Verdict(UNREACHABLE, f"the target {100 * target:+.2f} % is below the floor {100 * floor:+.2f} % "
                                    f"the machine's fastest measured rate allows "
                                    f"(measured {100 * effect.median:+.2f} % ± {100 * half:.2f})")
    if more_work and effect.median < -half:
        return Verdict(INCONCLUSIVE, f"impossible: the variant does more work yet came out "
                                     f"{-100 * effect.median:.2f} % faster, beyond the spread (±{100 * half:.2f} %)")
    if target is not None:
        if effect.median + half <= target:
            return Verdict(PASS, f"{100 * effect.median:+.2f} % ± {100 * half:.2f} stays within the target "
                                 f"{100 * target:.2f} %")
        if effect.median - half > target:
            return Verdict(FAIL, f"{100 * effect.median:+.2f} % ± {100 * half:.2f} is above the target "
                                 f"{100 * target:.2f} %")
        return Verdict(INCONCLUSIVE, f"the spread ±{100 * half:.2f} % straddles the target {100 * target:.2f} % "
                                     f"(effect {100 * effect.median:+.2f} %)")
    if half >= abs(effect.median):
        return Verdict(INCONCLUSIVE, f"the spread ±{100 * half:.2f} % exceeds the effect {100 * effect.median:+.2f} %")
    return Verdict(RESOLVED, f"{100 * effect.median:+.2f} % ± {100 * half:.2f}")


def flop_floor(flops: float, gflops: float) -> float:
    """The fewest seconds `flops` of arithmetic take at `gflops` (the fastest rate measured on the machine)."""
    return flops / (gflops * 1e9)


@dataclass(frozen=True)
class Comparison:
    """A variant against its base over paired rounds."""
    base: list[float]
    variant: list[float]

    def __post_init__(self):
        if len(self.base) != len(self.variant) or not self.base:
            raise ValueError("a comparison needs the same non-zero number of rounds on both sides")

    @property
    def ratio(self) -> Spread:
        return Spread.of([v / b for b, v in zip(self.base, self.variant)])

    @property
    def effect(self) -> Spread:
        r = self.ratio
        return Spread(r.median - 1, r.low - 1, r.high - 1)

    @property
    def extra_seconds(self) -> Spread:
        return Spread.of([v - b for b, v in zip(self.base, self.variant)])

    def verdict(self, target: float | None = None, more_work: bool = True, floor: float | None = None) -> Verdict:
        return judge(self.effect, target, more_work, floor)

    def line(self, label: str, machine: Machine, per: str = "step") -> str:
        extra, ratio = self.extra_seconds, self.ratio
        return (f"{label}: {extra.median:+.3f} s per {per} (per-round min {extra.low:+.3f}, max {extra.high:+.3f}); "
                f"ratio median {ratio.median:.4f} [{ratio.low:.4f}, {ratio.high:.4f}] over {len(self.base)} "
                f"rounds; base {statistics.median(self.base):.3f} s  {machine.line()}")


def share_line(label: str, shares: Sequence[float], machine: Machine) -> str:
    """A fraction measured inside each round (e.g. the injection's part of one forward)."""
    s = Spread.of(shares)
    return (f"{label}: {100 * s.median:.3f} % [{100 * s.low:.3f}, {100 * s.high:.3f}] over {len(shares)} rounds  "
            f"{machine.line()}")


def round_line(r: int, rounds: int, seconds: dict[str, float]) -> str:
    """Progress line for paired_rounds' on_round (r < 0: a warm-up round)."""
    head = "warm-up" if r < 0 else f"round {r + 1}/{rounds}"
    return f"{head}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items())


def print_verdict(label: str, verdict: Verdict) -> None:
    print(f"  verdict, {label}: {verdict}")
