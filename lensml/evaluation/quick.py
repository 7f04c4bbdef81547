"""The before/after check inside `lens run`: fidelity, degeneration, English retention."""

from __future__ import annotations

from dataclasses import dataclass, field

from lensml.evaluation.degeneration import degeneration
from lensml.evaluation.generation import generate_answers
from lensml.evaluation.metrics import share
from lensml.langid import LanguageIdentifier


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
