"""The before/after check inside `lens run`: fidelity, degeneration, English retention."""

from __future__ import annotations

from dataclasses import dataclass, field

from lensml.evaluation.degeneration import degeneration
from lensml.evaluation.generation import generate_answers
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
    """Per language: fidelity, echo/loop/empty shares, clean fidelity (right language, not degenerate)."""
    out = {}
    for lang, ans in answers.items():
        detected = ident.batch(ans)
        flags = degeneration(prompts[lang], ans)
        right = [d == lang for d in detected]
        n = len(ans)
        out[lang] = {
            "n": n,
            "fidelity": sum(right) / n,
            "echo": sum(flags["echo"]) / n,
            "loop": sum(flags["loop"]) / n,
            "empty": sum(flags["empty"]) / n,
            "degenerate": sum(flags["degenerate"]) / n,
            "clean_fidelity": sum(r and not g for r, g in zip(right, flags["degenerate"])) / n,
            "detected": detected,
        }
    return out

