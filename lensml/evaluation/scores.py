"""What the quick evaluation measures: per-language shares of held-out answers and English retention.

Defined here, where they are computed (lensml.evaluation.quick), and carried by the run's report
(lensml.results.report.RunReport.quick_eval).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Per-language quick-evaluation metrics, all shares of the held-out answers.
METRICS = ("fidelity", "clean_fidelity", "echo", "loop", "empty", "degenerate")


@dataclass
class LanguageScores:
    """Shares of one language's held-out answers (see lensml.evaluation.quick)."""

    n: int
    fidelity: float
    clean_fidelity: float
    echo: float
    loop: float
    empty: float
    degenerate: float

    @classmethod
    def from_scores(cls, scores: dict) -> "LanguageScores":
        return cls(**{f.name: scores[f.name] for f in dataclasses.fields(cls)})


@dataclass
class Retention:
    """Mean per-token NLL of the base model's own central-language answers, before and after."""

    base_nll: float
    enhanced_nll: float

    @property
    def relative_change(self) -> float:
        return (self.enhanced_nll - self.base_nll) / self.base_nll if self.base_nll else float("nan")


@dataclass
class QuickEval:
    """The before/after check on held-out prompts."""

    samples: int
    base: dict[str, LanguageScores]
    enhanced: dict[str, LanguageScores]
    retention: Retention

    def metric(self, name: str, side: str) -> dict[str, float]:
        return {lang: getattr(s, name) for lang, s in getattr(self, side).items()}
