"""SDRRLConfig: the options of the SDRRL baseline (YAML section `sdrrl`, flags `--sdrrl.*`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lensml.errors import LensError

#: The transfer set's parts, per question and target language (central: per question).
KINDS = ("central", "translated", "code_switched", "gold")
#: What a pair must pass to be kept (lensml.methods.sdrrl.transfer).
FILTERS = ("empty", "echo", "loop", "copy", "length", "language")
#: What happens to an answer cut at the token budget.
UNFINISHED = ("trim", "drop", "keep")


@dataclass
class SDRRLConfig:
    """SDRRL: self-distillation from the central language.

    The model answers the training questions in the central language; its answers, translated into
    each target language sentence by sentence, become the target-language answers (and, mixed
    sentence by sentence with the originals, code-switched ones), beside the data's own translated
    (question, answer) pairs; then every parameter is fine-tuned on that transfer set.
    """

    translator: str = field(default="self", metadata={
        "help": "what translates the model's answers: self (the model itself under a translation prompt), a "
                "sequence-to-sequence translation checkpoint (Hub id or folder: Marian, NLLB, M2M100, T5/MADLAD), or "
                "a file of ready translations (.jsonl/.json/.csv/.tsv, one column per language code, one sentence "
                "a row)"})
    translator_codes: str | None = field(default=None, metadata={
        "help": "language codes of a multilingual translation checkpoint, central and targets, e.g. "
                "en=eng_Latn,zh=zho_Hans (NLLB) or en=en,zh=zh (M2M100): the source language is set on its tokenizer, "
                "the target is forced as the first generated token (default: none, for one-pair models like Marian)"})
    translator_prefix: str = field(default="", metadata={
        "help": "text put before every sentence given to a translation checkpoint, {src} and {tgt} standing for the "
                "language names (T5: 'translate {src} to {tgt}: '; MADLAD: '<2zh> ')"})
    kinds: list[str] = field(default_factory=lambda: list(KINDS), metadata={
        "help": "parts of the transfer set: central (the model's own answer to the central question), translated "
                "(the target question with the translated answer), code_switched (the same answer, some sentences "
                "translated, the rest left in the central language), gold (the data's translated question and "
                "answer); one pair of each per question and target language, central one per question"})
    code_switch_ratio: float = field(default=0.5, metadata={
        "help": "share of an answer's sentences in the target language in its code-switched variant (at least one "
                "sentence of each language; answers of one sentence have no code-switched variant)"})
    filters: list[str] = field(default_factory=lambda: list(FILTERS), metadata={
        "help": "what drops a pair: empty answers, echo (mostly the question copied), loop, copy (a translation equal "
                "to its source), length (a translation's token count outside 1/R..R times its source's, R = "
                "--sdrrl.max-length-ratio), language (an answer not in the central language, a translation not in the "
                "target language)"})
    unfinished: str = field(default="trim", metadata={
        "help": "an answer cut at --sdrrl.max-new-tokens: trim (keep its complete sentences, drop it if it has none), "
                "drop, or keep (as cut)", "choices": list(UNFINISHED)})
    max_length_ratio: float = field(default=3.0, metadata={
        "help": "largest ratio between a translated sentence's token count and its source's, either way"})
    max_new_tokens: int = field(default=192, metadata={
        "help": "token budget of the model's own (greedy) answers; an answer cut there is unfinished"})
    max_response_tokens: int = field(default=192, metadata={
        "help": "token budget per training response (cut from the right; the end-of-turn token is kept)"})
    batch_size: int = field(default=64, metadata={"help": "prompts per generation batch (answers and translations)"})

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise LensError(f"sdrrl.kinds: unknown part '{bad[0] if bad else ''}': use some of {', '.join(KINDS)}")
        bad = [f for f in self.filters if f not in FILTERS]
        if bad:
            raise LensError(f"sdrrl.filters: unknown filter '{bad[0]}': use some of {', '.join(FILTERS)}")
        if self.unfinished not in UNFINISHED:
            raise LensError(f"sdrrl.unfinished must be one of {', '.join(UNFINISHED)}, got '{self.unfinished}'")
        if not 0 < self.code_switch_ratio < 1:
            raise LensError(f"sdrrl.code_switch_ratio must be between 0 and 1 (exclusive), got {self.code_switch_ratio}")
        if not (math.isfinite(self.max_length_ratio) and self.max_length_ratio >= 1):
            raise LensError(f"sdrrl.max_length_ratio must be a number >= 1, got {self.max_length_ratio}")
        for name in ("max_new_tokens", "batch_size", "max_response_tokens"):
            if getattr(self, name) < 1:
                raise LensError(f"sdrrl.{name} must be at least 1, got {getattr(self, name)}")
        if not self.translator.strip():
            raise LensError("sdrrl.translator is empty: use self, a translation checkpoint or a translations file")
        self.codes()  # syntax checked now

    def codes(self) -> dict[str, str]:
        """translator_codes as {lensml code: the checkpoint's code}."""
        if not self.translator_codes:
            return {}
        pairs = [p.split("=", 1) for p in self.translator_codes.split(",") if p.strip()]
        if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
            raise LensError(f"sdrrl.translator_codes '{self.translator_codes}': write LANG=CODE pairs, e.g. "
                            f"en=eng_Latn,zh=zho_Hans")
        return {k.strip(): v.strip() for k, v in pairs}
