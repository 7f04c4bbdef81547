"""The before/after check of a run: the base model answers, the enhanced one answers, both are scored.

The recipe calls three functions (answer_before, answer_after, compare) and gets back
the report's QuickEval plus one audit row per prompt for answers.jsonl, recording
what was counted (detected language, echo/loop/empty flags) on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

from lensml.evaluation.generation import answer_nll
from lensml.evaluation.quick import QuickEvalConfig, answer_prompts, score_answers
from lensml.langid import LanguageIdentifier
from lensml.report import LanguageScores, QuickEval, Retention


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
                checks = scores[side][lang].get("answers")
                row[f"{side}_check"] = checks[i] if checks else {"detected": scores[side][lang]["detected"][i]}
            rows.append(row)
    return quick, rows
