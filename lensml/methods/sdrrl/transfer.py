"""SDRRL's transfer set, from the model's own central-language answers: which pairs, and which are kept.

Per question (the run's parallel rows) and target language x, with Q the questions, A* the model's
own central-language answer and A the data's gold answers:

- central:       (Q_central, A*)                 the self-distilled answer itself (once per question)
- translated:    (Q_x, T_x(A*))                  the answer translated, sentence by sentence
- code_switched: (Q_x, mix of A* and T_x(A*))    code_switch_ratio of its sentences translated, the rest kept
- gold:          (Q_x, A_x)                      the data's own target answer, else T_x(A_central)

Translation works on sentences (split after . ! ? and their CJK forms, and at newlines; the separators
are kept), which is what makes a sentence-level code-switched variant possible with any translator.
Everything here is plain text in, pairs out: the model's part (answers, translations) is the caller's.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable

from lensml.evaluation.degeneration import is_echo, is_empty, is_loop
from lensml.methods.sdrrl.config import SDRRLConfig

_SPLIT = re.compile(r"((?<=[.!?])\s+|(?<=[。！？])\s*|\n+)")
_WORD = re.compile(r"[^\W\d_]{3,}")
_LIST_NUMBER = re.compile(r"^\s*\d{1,3}[.)]$")


def split_sentences(text: str) -> tuple[list[str], list[str]]:
    """(sentences, separators): text == s0 + sep0 + s1 + sep1 + ... + s_last (separators may be empty).

    A list number ("2.") stays with the sentence it numbers.
    """
    parts = _SPLIT.split(text.strip())
    sents, seps = parts[0::2], parts[1::2]
    out_s: list[str] = []
    out_sep: list[str] = []
    glue = False  # the previous piece was a bare list number: this one joins it
    for i, s in enumerate(sents):
        sep = seps[i] if i < len(seps) else ""
        if not s.strip():
            if out_sep:
                out_sep[-1] += s + sep
            continue
        if glue:
            out_s[-1] += out_sep[-1] + s
            out_sep[-1] = sep
        else:
            out_s.append(s)
            out_sep.append(sep)
        glue = bool(_LIST_NUMBER.match(s)) and "\n" not in sep
    return out_s, out_sep[:-1] if out_sep else []


def join_sentences(sents: list[str], seps: list[str]) -> str:
    """Sentences joined by their separators; a plain space after a full-width stop (。！？) is dropped, as
    Chinese and Japanese write them."""
    out = []
    for i, s in enumerate(sents):
        out.append(s)
        if i < len(seps):
            out.append("" if "\n" not in seps[i] and s.rstrip()[-1:] in "。！？" else seps[i])
    return "".join(out).strip()


@dataclass
class Question:
    """One training row: its prompt in every language, and its gold answers where the data has them."""

    prompts: dict[str, str]
    gold: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    """The model's own central-language answer to a question, and whether it ended by itself."""

    text: str
    finished: bool = True


@dataclass
class TransferPair:
    kind: str
    lang: str
    prompt: str
    response: str
    row: int


@dataclass
class TransferSet:
    """The pairs kept, and what was dropped and why (the manifest's record of the transfer set)."""

    pairs: list[TransferPair] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    trimmed: int = 0  # answers cut at the token budget that kept their complete sentences
    code_switched_sentences: list[int] = field(default_factory=lambda: [0, 0])  # [translated, all]

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def kept(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    @property
    def code_switch_share(self) -> float | None:
        """Share of the code-switched answers' sentences that are in the target language."""
        done, total = self.code_switched_sentences
        return done / total if total else None

    def summary(self) -> dict:
        return {"pairs": len(self.pairs), "kept": self.kept(), "dropped": dict(sorted(self.dropped.items())),
                "trimmed_answers": self.trimmed, "code_switch_share": self.code_switch_share}


def settle(answer: Answer, cfg: SDRRLConfig) -> Answer | None:
    """The answer as it is distilled: an answer cut at the token budget is trimmed to its complete sentences
    (--sdrrl.unfinished trim; None when it has none), dropped (drop: None) or kept as it is (keep)."""
    if answer.finished or cfg.unfinished == "keep":
        return answer
    if cfg.unfinished == "drop":
        return None
    sents, seps = split_sentences(answer.text)
    return Answer(join_sentences(sents[:-1], seps[:len(sents) - 2]), finished=True) if len(sents) > 1 else None


def answer_problem(question: str, answer: Answer | None, cfg: SDRRLConfig, identify: Callable[[str], str] | None,
                   central: str) -> str | None:
    """Why the model's own answer cannot be distilled (a filter's name), or None when it can."""
    f = set(cfg.filters)
    if answer is None:
        return "unfinished"
    if is_empty(answer.text):
        return "empty"
    if "echo" in f and is_echo(question, answer.text):
        return "echo"
    if "loop" in f and is_loop(answer.text):
        return "loop"
    if "language" in f and identify is not None and identify(answer.text) != central:
        return "language"
    return None


def translation_problem(source: str, target: str, cfg: SDRRLConfig, measure: Callable[[str], int]) -> str | None:
    """Why a sentence's translation is not kept (a filter's name), or None."""
    f = set(cfg.filters)
    if not target.strip():
        return "empty"
    if "copy" in f and _WORD.search(source) and target.strip().casefold() == source.strip().casefold():
        return "copy"
    if "length" in f:
        a, b = max(measure(source), 1), max(measure(target), 1)
        if max(a / b, b / a) > cfg.max_length_ratio:
            return "length"
    return None


Translate = Callable[[list[str], str], list[str | None]]
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uff00-\uffef\u3000-\u303f]")


def rough_tokens(text: str) -> int:
    """A length that compares across scripts without a tokenizer: words, plus one per CJK character."""
    return len(_CJK.sub(" ", text).split()) + len(_CJK.findall(text))


def build_transfer_set(questions: list[Question], answers: list[Answer], central: str, targets: list[str],
                       translate: Translate, cfg: SDRRLConfig, seed: int = 0,
                       measure: Callable[[str], int] = rough_tokens,
                       identify: Callable[[str], str] | None = None) -> TransferSet:
    """The transfer set of questions and the model's answers (see the module docstring).

    translate(sentences, lang) -> their translations into lang (None: no translation); it is called once
    per target language with every sentence that needs translating. measure: a text's length for the
    length filter (the model's token count; by default rough_tokens); identify: a language identifier for
    the language filter.
    """
    kinds, out = set(cfg.kinds), TransferSet()
    trimmed = sum(not a.finished for a in answers) if cfg.unfinished == "trim" else 0
    answers = [settle(a, cfg) for a in answers]
    out.trimmed = trimmed - sum(a is None for a in answers) if trimmed else 0
    verdicts = [answer_problem(q.prompts[central], a, cfg, identify, central) for q, a in zip(questions, answers)]
    for v in verdicts:
        if v is not None:
            out.drop(f"answer: {v}")
    split_answers = [split_sentences(a.text) if v is None else ([], []) for a, v in zip(answers, verdicts)]
    needs_self = bool(kinds & {"translated", "code_switched"})
    for i, (q, v) in enumerate(zip(questions, verdicts)):
        if "central" in kinds and v is None:
            out.pairs.append(TransferPair("central", central, q.prompts[central], answers[i].text.strip(), i))
    for lang in targets:
        wanted = {s for sents, _ in split_answers for s in sents} if needs_self else set()
        if "gold" in kinds:
            wanted |= {s for q in questions if not q.gold.get(lang) and q.gold.get(central)
                       for s in split_sentences(q.gold[central])[0]}
        ordered = sorted(wanted)
        done = dict(zip(ordered, translate(ordered, lang))) if ordered else {}
        good: dict[str, str] = {}
        for src, tgt in done.items():
            problem = "untranslated" if tgt is None else translation_problem(src, tgt, cfg, measure)
            if problem is None:
                good[src] = tgt.strip()
            else:
                out.drop(f"sentence: {problem}")
        for i, q in enumerate(questions):
            _pairs_for(out, i, q, lang, central, split_answers[i], verdicts[i] is None, good, kinds, cfg, seed,
                       identify)
    return out


def _pairs_for(out: TransferSet, i: int, q: Question, lang: str, central: str, answer: tuple[list[str], list[str]],
               answered: bool, good: dict[str, str], kinds: set[str], cfg: SDRRLConfig, seed: int,
               identify) -> None:
    sents, seps = answer
    language_check = "language" in cfg.filters and identify is not None
    if answered and kinds & {"translated", "code_switched"}:
        if not all(s in good for s in sents):
            for kind in sorted(kinds & {"translated", "code_switched"}):
                out.drop(f"{kind}: a sentence without a kept translation")
        else:
            translated = join_sentences([good[s] for s in sents], seps)
            if language_check and identify(translated) != lang:
                for kind in sorted(kinds & {"translated", "code_switched"}):
                    out.drop(f"{kind}: translation not in {lang}")
            else:
                if "translated" in kinds:
                    out.pairs.append(TransferPair("translated", lang, q.prompts[lang], translated, i))
                if "code_switched" in kinds:
                    _code_switched(out, i, q, lang, sents, seps, good, cfg, seed)
    if "gold" in kinds:
        if q.gold.get(lang):
            out.pairs.append(TransferPair("gold", lang, q.prompts[lang], q.gold[lang].strip(), i))
        elif q.gold.get(central):
            g_sents, g_seps = split_sentences(q.gold[central])
            if all(s in good for s in g_sents):
                out.pairs.append(TransferPair("gold", lang, q.prompts[lang],
                                              join_sentences([good[s] for s in g_sents], g_seps), i))
            else:
                out.drop("gold: a sentence without a kept translation")
        else:
            out.drop("gold: no gold answer")


def _code_switched(out: TransferSet, i: int, q: Question, lang: str, sents: list[str], seps: list[str],
                   good: dict[str, str], cfg: SDRRLConfig, seed: int) -> None:
    n = len(sents)
    if n < 2:
        out.drop("code_switched: one sentence")
        return
    k = min(max(1, round(cfg.code_switch_ratio * n)), n - 1)
    rng = random.Random(f"{seed}:{lang}:{i}")  # the same mix for the same run, whatever else is in the set
    chosen = set(rng.sample(range(n), k))
    mixed = [good[s] if j in chosen else s for j, s in enumerate(sents)]
    out.pairs.append(TransferPair("code_switched", lang, q.prompts[lang], join_sentences(mixed, seps), i))
    out.code_switched_sentences[0] += k
    out.code_switched_sentences[1] += n
