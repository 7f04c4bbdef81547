"""The before/after check inside `lens run`: fidelity, degeneration, English retention.

The recipe calls three functions (answer_before, answer_after, compare) and gets back
the report's QuickEval plus one audit row per prompt for answers.jsonl, recording
what was counted (detected language, echo/loop/empty flags) on each side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lensml.evaluation.degeneration import degeneration
from lensml.errors import LensError
from lensml.evaluation.generation import answer_nll, generate_answers
from lensml.evaluation.metrics import share
from lensml.langid import LanguageIdentifier
from lensml.report import LanguageScores, QuickEval, Retention


@dataclass
class QuickEvalConfig:
    """Held-out prompts answered greedily by the base and the enhanced model."""

    data: str = field(default="embedded:heldout", metadata={"help": "held-out prompts (same sources as --train-data)"})
    samples: int | None = field(default=None, metadata={"help": "prompts per language (default: all, 40 embedded)"})
    max_new_tokens: int = field(default=64, metadata={"help": "greedy tokens per answer"})
    batch_size: int = field(default=40, metadata={"help": "prompts per generation batch"})
    langid: str = field(default="lingua", metadata={"help": "language identifier: lingua, cld3, glotlid"})
    glotlid_model: str | None = field(default=None, metadata={"help": "GlotLID fastText model file (with --langid glotlid)"})
    enabled: bool = field(default=True, metadata={"help": "run the quick before/after evaluation"})

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise LensError(f"eval.{name} must be at least 1, got {getattr(self, name)}")
        if self.samples is not None and self.samples < 1:
            raise LensError(f"eval.samples must be at least 1, got {self.samples}: leave it unset to use all prompts")
        LanguageIdentifier(self.langid, self.glotlid_model)  # unknown identifiers fail now, not after training


def answer_prompts(model, tokenizer, prompts: dict[str, list[str]], cfg: QuickEvalConfig, tag: str) -> dict[str, list[str]]:
    return {lang: generate_answers(model, tokenizer, ps, cfg.max_new_tokens, cfg.batch_size, desc=f"{tag} {lang}")
            for lang, ps in prompts.items()}


def score_answers(prompts: dict[str, list[str]], answers: dict[str, list[str]], ident: LanguageIdentifier) -> dict:
    """Per language: fidelity, echo/loop/empty shares, clean fidelity (right language AND not degenerate).

    "answers" holds what was counted for each answer, in order, so that a run's
    answers.jsonl can show why an answer did or did not count as clean.
    """
    out = {}
    for lang, ans in answers.items():
        detected = ident.batch(ans)
        flags = degeneration(prompts[lang], ans)
        right = [d == lang for d in detected]
        clean = [r and not g for r, g in zip(right, flags["degenerate"])]
        per_answer = [{"detected": d, "echo": e, "loop": lp, "empty": em, "degenerate": g, "clean": c,
                       "right_language": r}
                      for d, e, lp, em, g, c, r in zip(detected, flags["echo"], flags["loop"], flags["empty"],
                                                       flags["degenerate"], clean, right)]
        out[lang] = {
            "n": len(ans),
            "fidelity": share(right),
            "echo": share(flags["echo"]),
            "loop": share(flags["loop"]),
            "empty": share(flags["empty"]),
            "degenerate": share(flags["degenerate"]),
            "clean_fidelity": share(clean),
            "detected": detected,
            "answers": per_answer,
        }
    return out


@dataclass
class Answers:
    """One model's answers to the held-out prompts, and the NLL it gives the base model's central answers."""

    prompts: dict[str, list[str]]
    central: str
    answers: dict[str, list[str]]
    central_nll: float


def answer_before(model, tokenizer, prompts: dict[str, list[str]], central: str, cfg: QuickEvalConfig) -> Answers:
    """The base model's answers; its NLL of its own central-language answers is the retention baseline."""
    answers = answer_prompts(model, tokenizer, prompts, cfg, "base")
    return Answers(prompts, central, answers, answer_nll(model, tokenizer, prompts[central], answers[central]))


def answer_after(model, tokenizer, before: Answers, cfg: QuickEvalConfig) -> Answers:
    """The enhanced model's answers, and its NLL of the *base* model's central answers (same text, new model)."""
    answers = answer_prompts(model, tokenizer, before.prompts, cfg, "enhanced")
    c = before.central
    return Answers(before.prompts, c, answers, answer_nll(model, tokenizer, before.prompts[c], before.answers[c]))


def compare(before: Answers, after: Answers, cfg: QuickEvalConfig) -> tuple[QuickEval, list[dict]]:
    """Scores of both sides (the report's QuickEval) and one audit row per prompt."""
    ident = LanguageIdentifier(cfg.langid, cfg.glotlid_model)
    scores = {"base": score_answers(before.prompts, before.answers, ident),
              "enhanced": score_answers(after.prompts, after.answers, ident)}
    n = len(next(iter(before.prompts.values())))
    quick = QuickEval(n, *({lang: LanguageScores.from_scores(s) for lang, s in scores[side].items()}
                           for side in ("base", "enhanced")),
                      Retention(before.central_nll, after.central_nll))
    rows = []
    for lang, prompts in before.prompts.items():
        for i, prompt in enumerate(prompts):
            row = {"lang": lang, "prompt": prompt, "base": before.answers[lang][i], "enhanced": after.answers[lang][i]}
            for side in ("base", "enhanced"):
                row[f"{side}_check"] = scores[side][lang]["answers"][i]
            rows.append(row)
    return quick, rows
