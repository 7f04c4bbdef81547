"""Shares and their standard errors: the one home of the arithmetic behind every reported rate."""

from __future__ import annotations

import math


def share(flags: list[bool]) -> float:
    """Fraction of true flags (0.0 for no flags)."""
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


def stderr_of_mean(p: float, n: int) -> float | None:
    """Standard error of a share: sqrt(p(1-p)/(n-1)), lm-eval's sample-stddev/sqrt(n); None for n < 2."""
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None
