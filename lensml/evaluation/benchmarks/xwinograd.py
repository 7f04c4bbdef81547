"""XWinograd (`Muennighoff/xwinograd`: sentence with `_`, option1, option2, answer "1"/"2").

Also reads the original TSV of yandex-research/crosslingual_winograd (no header; 7
columns: language, source, English reference, raw text, NLTK tokens as JSON, pronoun
as JSON [text, [start, end], tokens], candidates as JSON [[text, [start, end], tokens,
correct], ...]), one file for all languages: the pronoun span is replaced by `_` to
give the Hub's form, so both sources give the same prompts. The Hub calls Japanese
`jp`, and so does the TSV.

lm-eval scores this as "multiple input": each option fills the blank in the context
and the rest of the sentence is the continuation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from lensml.errors import LensError
from lensml.evaluation.benchmarks.base import (
    HubSource,
    MCItem,
    MultipleChoiceBenchmark,
    label_field,
    letter_message,
    text_field,
)


class XWinograd(MultipleChoiceBenchmark):
    name = "xwinograd"
    display_name = "XWinograd"
    aliases = ("xwino",)
    hub = HubSource("Muennighoff/xwinograd", "test", {"ja": "jp"})
    extensions = (".jsonl", ".json", ".tsv")

    def read_local(self, path: Path, lang: str) -> Iterator[tuple[dict, str]]:
        if path.suffix.lower() == ".tsv":
            return read_yandex_tsv(path, {lang, self.hub.lang_alias.get(lang, lang)})
        return super().read_local(path, lang)

    def normalise(self, row: dict, where: str, lang: str) -> MCItem:
        doc = {k: text_field(row, k, where) for k in ("sentence", "option1", "option2")}
        if "_" not in doc["sentence"]:
            raise LensError(f"{where}: sentence has no '_' blank")
        return MCItem(self.name, lang, doc, label_field(row, "answer", {"1": 0, "2": 1}, where), where)

    def loglik_requests(self, item: MCItem) -> tuple[list[tuple[str, str]], list[str]]:
        d = item.doc
        blank = d["sentence"].index("_")
        target = d["sentence"][blank + 1:].strip()
        contexts = [d["sentence"][:blank] + d["option1"], d["sentence"][:blank] + d["option2"]]
        return [(c, " " + target) for c in contexts], contexts

    def letter_prompt(self, item: MCItem) -> tuple[str, int]:
        d = item.doc
        head = f"Choose the option that correctly fills the blank (_) in the sentence.\n\nSentence: {d['sentence']}"
        return letter_message(head, [d["option1"], d["option2"]])


def read_yandex_tsv(path: Path, wanted: set[str]) -> Iterator[tuple[dict, str]]:
    """Rows of the yandex-research TSV for the wanted language codes, turned into the Hub's `_` form."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 7:
                raise LensError(f"{where}: expected 7 tab-separated columns, found {len(cols)}")
            if cols[0] not in wanted:
                continue
            try:
                tokens, pronoun, candidates = (json.loads(c) for c in cols[4:7])
                start, end = pronoun[1]
                options = [(c[0], bool(c[3])) for c in candidates]
            except (json.JSONDecodeError, TypeError, ValueError, IndexError) as err:
                raise LensError(f"{where}: malformed JSON column ({err})") from err
            if len(options) != 2 or sum(ok for _, ok in options) != 1:
                raise LensError(f"{where}: expected two candidates with exactly one marked correct")
            span = _char_span(cols[3], tokens, start, end, pronoun[0])
            if span is None:
                raise LensError(f"{where}: cannot locate the pronoun '{pronoun[0]}' in the sentence")
            sentence = cols[3][:span[0]] + "_" + cols[3][span[1]:]
            yield {"sentence": sentence, "option1": options[0][0], "option2": options[1][0],
                   "answer": "1" if options[0][1] else "2"}, where


def _char_span(text: str, tokens: list[str], start: int, end: int, raw: str) -> tuple[int, int] | None:
    """Character span of tokens[start:end] in text, aligning tokens left to right.

    NLTK rewrites quotes (`` ''), so a token that is not found is skipped; if the
    pronoun's own tokens are not found, fall back to the occurrence of its raw text
    whose rank matches its rank among equal tokens.
    """
    offsets: list[int | None] = []
    cursor = 0
    for tok in tokens:
        pos = text.find(tok, cursor)
        offsets.append(pos if pos >= 0 else None)
        if pos >= 0:
            cursor = pos + len(tok)
    if 0 <= start < end <= len(tokens) and offsets[start] is not None and offsets[end - 1] is not None:
        return offsets[start], offsets[end - 1] + len(tokens[end - 1])
    rank = sum(1 for t in tokens[:start] if t == raw)
    hits = [m.start() for m in re.finditer(re.escape(raw), text)] if raw else []
    return (hits[rank], hits[rank] + len(raw)) if rank < len(hits) else None
