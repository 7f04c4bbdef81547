"""What language fidelity cannot see: echoed prompts, loops, empty answers.

A model that repeats a Chinese question back has a perfectly Chinese answer and
has not been fixed; these checks catch that.
"""

from __future__ import annotations

import re

_LOOP = re.compile(r"(.{4,60}?)(?:\s*\1){2,}", re.DOTALL)
_SPACES = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def is_empty(answer: str) -> bool:
    return not answer.strip()


def echo_share(prompt: str, answer: str, n: int = 4) -> float:
    """Share of the answer's character n-grams that also occur in the prompt."""
    p, a = _norm(prompt), _norm(answer)
    grams = [a[i:i + n] for i in range(len(a) - n + 1)]
    if not grams:
        return 0.0
    seen = {p[i:i + n] for i in range(len(p) - n + 1)}
    return sum(g in seen for g in grams) / len(grams)


def is_echo(prompt: str, answer: str, threshold: float = 0.5) -> bool:
    """Most of the answer is copied from the prompt (restating it once at the start is not enough)."""
    return echo_share(prompt, answer) >= threshold


def is_loop(answer: str) -> bool:
    """A span of 4-60 characters repeated at least three times in a row."""
    return bool(_LOOP.search(answer))


def distinct_n(answers: list[str], n: int = 2) -> float:
    """Share of distinct character n-grams over all answers (1.0: no repetition)."""
    grams = [a[i:i + n] for a in answers for i in range(len(a) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def degeneration(prompts: list[str], answers: list[str]) -> dict[str, list[bool]]:
    """Per-answer flags: echo, loop, empty, and degenerate (any of them)."""
    echo = [is_echo(p, a) for p, a in zip(prompts, answers)]
    loop = [is_loop(a) for a in answers]
    empty = [is_empty(a) for a in answers]
    return {"echo": echo, "loop": loop, "empty": empty,
            "degenerate": [e or lp or em for e, lp, em in zip(echo, loop, empty)]}
