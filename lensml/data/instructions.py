"""Instruction data of any size, streamed: (prompt, response, language) from files or Hub datasets.

xSFT-Full, as the LENS paper ran it, fine-tunes on all the target language's instruction data it
can get (the whole of Aya and Bactrian-X: 111.5K rows for Chinese), far more than the run's own
parallel rows, so this data is read one row at a time and never held whole.

A source is ``SOURCE[#MAPPING]``; several are joined by `` + ``. SOURCE is a local file (.jsonl,
.csv/.tsv, .parquet, streamed; .json arrays are parsed whole), ``hf:OWNER/NAME[:CONFIG][@SPLIT]``
(streamed with `datasets`), or the shortcuts ``CohereForAI/aya_dataset`` (rows of the wanted
languages by their ``language_code``) and ``MBZUAI/Bactrian-X`` (one config per language). The shape
of a row is read off its columns, or given by MAPPING:

- Alpaca and Bactrian-X: ``instruction`` (+ ``input``) -> ``output``;
- Aya: ``inputs`` -> ``targets`` (language from ``language_code``);
- chat: ``messages`` [{role, content}] (or ShareGPT ``conversations`` [{from, value}]): everything up
  to the last assistant turn is the prompt, that turn the response;
- any other: ``#prompt=COLUMN,response=COLUMN``.

MAPPING keys: prompt, response, instruction, input, output, messages (column names), lang (the column
holding each row's language code) and language (one code for every row, e.g. ``language=zh``). Without
either, a source whose rows carry no language is taken to be in the one trained language, and refused
when several are trained.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lensml.data.readers import stream_table
from lensml.errors import LensError
from lensml.languages import iso639_1
from lensml.runtime.models import bound_hub_requests

AYA_HUB_ID = "CohereForAI/aya_dataset"
BACTRIAN_HUB_ID = "MBZUAI/Bactrian-X"
SEPARATOR = " + "
_KEYS = {"prompt", "response", "instruction", "input", "output", "messages", "lang", "language"}


@dataclass
class Pair:
    """One instruction example: prompt (text, or a conversation ending in a user turn), response, language."""

    prompt: str | list[dict]
    response: str
    lang: str
    where: str


@dataclass
class Source:
    """One parsed source: where rows come from, and how a row becomes a Pair."""

    spec: str
    path: Path | None = None                  # a local file
    hub: tuple[str, str | None, str] | None = None   # (dataset id, config, split)
    per_language_config: bool = False         # Bactrian-X: one Hub config per language
    mapping: dict[str, str] = field(default_factory=dict)

    def rows(self, langs: list[str]) -> Iterator[tuple[dict, str, str | None]]:
        """(row, where, language the rows are known to be in or None), streamed."""
        if self.path is not None:
            for row, where in stream_table(self.path):
                yield row, where, None
            return
        dataset_id, config, split = self.hub
        for lang in (langs if self.per_language_config else [None]):
            cfg = lang if self.per_language_config else config
            for i, row in enumerate(_hub_stream(dataset_id, cfg, split)):
                yield row, f"{dataset_id}[{cfg or 'default'}/{split}] row {i}", lang


def _hub_stream(dataset_id: str, config: str | None, split: str):
    try:
        import datasets  # optional dependency (lensml[hub])
    except ImportError as err:
        raise LensError(f"streaming {dataset_id} from the Hub needs the datasets package: pip install 'lensml[hub]'") \
            from err
    bound_hub_requests()
    try:
        return datasets.load_dataset(dataset_id, config, split=split, streaming=True)
    except Exception as err:  # network and Hub errors come in many types
        raise LensError(f"cannot stream {dataset_id} from the Hub ({type(err).__name__}): download it and pass the "
                        f"local file instead") from err


def parse_sources(text: str) -> list[Source]:
    """The sources of a --sft.full-data value (syntax only: nothing is opened)."""
    parts = [p.strip() for p in text.split(SEPARATOR)]
    if not text.strip() or not all(parts):
        raise LensError(f"--sft.full-data '{text}': give one or more sources joined by '{SEPARATOR.strip()}', e.g. "
                        f"'hf:{AYA_HUB_ID} + hf:{BACTRIAN_HUB_ID}' or data/zh.jsonl#prompt=question,response=answer")
    return [_parse(p) for p in parts]


def _parse(spec: str) -> Source:
    base, mapping = spec, {}
    if "#" in spec and not Path(spec).exists():
        base, raw = spec.rsplit("#", 1)
        pairs = [p.split("=", 1) for p in raw.split(",") if p.strip()]
        if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
            raise LensError(f"data source {spec}: the part after '#' must be KEY=COLUMN pairs, e.g. "
                            f"#prompt=question,response=answer")
        mapping = {k.strip(): v.strip() for k, v in pairs}
        unknown = sorted(set(mapping) - _KEYS)
        if unknown:
            raise LensError(f"data source {spec}: unknown key '{unknown[0]}': use {', '.join(sorted(_KEYS))}")
    hub_id = base[3:] if base.startswith("hf:") else base if base in (AYA_HUB_ID, BACTRIAN_HUB_ID) else None
    if hub_id is not None:
        ident, _, split = hub_id.partition("@")
        dataset_id, _, config = ident.partition(":")
        if dataset_id.count("/") != 1:
            raise LensError(f"{spec}: a Hub dataset is hf:OWNER/NAME[:CONFIG][@SPLIT], e.g. hf:{BACTRIAN_HUB_ID}:zh")
        per_lang = dataset_id == BACTRIAN_HUB_ID and not config
        return Source(spec, hub=(dataset_id, config or None, split or "train"), per_language_config=per_lang,
                      mapping=mapping)
    path = Path(base)
    if not path.is_file():
        raise LensError(f"--sft.full-data: {base} is not a file or a Hub dataset (hf:OWNER/NAME): check the path")
    return Source(spec, path=path, mapping=mapping)


def _shape(source: Source, row: dict) -> dict[str, str]:
    """The row's columns by role: explicit mapping first, then the known shapes; no response column is an error."""
    m = dict(source.mapping)
    cols = set(row)
    if not ({"prompt", "instruction", "messages"} & set(m)):
        if "messages" in cols or "conversations" in cols:
            m["messages"] = "messages" if "messages" in cols else "conversations"
        elif "instruction" in cols:
            m.update(instruction="instruction", **({"input": "input"} if "input" in cols else {}))
            m.setdefault("output", "output")
        elif "inputs" in cols:
            m.update(prompt="inputs")
            m.setdefault("response", "targets")
            if "language_code" in cols:
                m.setdefault("lang", "language_code")
        elif "prompt" in cols:
            m["prompt"] = "prompt"
            m.setdefault("response", "response")
        else:
            raise LensError(f"{source.spec}: cannot tell the prompt column among {', '.join(sorted(cols))}: map it, "
                            f"e.g. #prompt=question,response=answer")
    if "messages" not in m:
        resp = m.get("response") or m.get("output")
        if resp is None or resp not in cols:
            raise LensError(f"{source.spec} has no responses (no column '{resp or 'response'}' among "
                            f"{', '.join(sorted(cols))}): xsft-full trains on (prompt, response) pairs, so map the "
                            f"response column, e.g. #prompt=question,response=answer")
    for key in ("prompt", "instruction", "messages", "lang"):
        if key in m and m[key] not in cols:
            raise LensError(f"{source.spec} has no column '{m[key]}': columns are {', '.join(sorted(cols))}")
    return m


def _chat(messages) -> tuple[list[dict], str] | None:
    """(conversation up to the last assistant turn, that turn's text), or None when there is none."""
    if not isinstance(messages, list):
        return None
    turns = []
    for m in messages:
        if not isinstance(m, dict):
            return None
        role = m.get("role", {"human": "user", "gpt": "assistant"}.get(m.get("from")))
        content = m.get("content", m.get("value"))
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            return None
        turns.append({"role": role, "content": content})
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None or last == 0 or turns[last - 1]["role"] != "user" or not turns[last]["content"].strip():
        return None
    return turns[:last], turns[last]["content"]


def _pair(m: dict[str, str], row: dict) -> tuple[str | list[dict], str] | None:
    if "messages" in m:
        return _chat(row.get(m["messages"]))
    if "instruction" in m:
        ins, extra = row.get(m["instruction"]), row.get(m.get("input", ""), "") if "input" in m else ""
        prompt = ins + ("\n" + extra if isinstance(extra, str) and extra.strip() else "") if isinstance(ins, str) else None
    else:
        prompt = row.get(m["prompt"])
    response = row.get(m.get("response") or m.get("output"))
    if not (isinstance(prompt, str) and prompt.strip() and isinstance(response, str) and response.strip()):
        return None
    return prompt, response


def _language(m: dict[str, str], row: dict, known: str | None, langs: list[str]) -> str | None:
    if known is not None:
        return known
    if "language" in m:
        return m["language"]
    if "lang" in m:
        code = str(row.get(m["lang"], "")).strip().lower()
        return code if len(code) == 2 else iso639_1(code)
    return langs[0] if len(langs) == 1 else None


@dataclass
class Tally:
    """What streaming read: pairs kept per language, rows skipped per reason."""

    kept: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return {"kept": dict(self.kept), "rows": sum(self.kept.values()), "skipped": dict(self.skipped)}


def stream_pairs(text: str, langs: list[str], tally: Tally | None = None, limit: int | None = None) -> Iterator[Pair]:
    """Pairs in langs from every source of text, one at a time (rows in other languages, or without a
    prompt or a response, are skipped and counted in tally)."""
    tally = tally if tally is not None else Tally()
    count = 0
    for source in parse_sources(text):
        check_languages_known(source, langs)
        shape = None
        for row, where, known in source.rows(langs):
            if limit is not None and count >= limit:
                return
            shape = shape or _shape(source, row)
            lang = _language(shape, row, known, langs)
            if lang not in langs:
                tally.skip("other language")
                continue
            pair = _pair(shape, row)
            if pair is None:
                tally.skip("no prompt or response")
                continue
            tally.kept[lang] = tally.kept.get(lang, 0) + 1
            count += 1
            yield Pair(pair[0], pair[1], lang, where)


def check_languages_known(source: Source, langs: list[str]) -> None:
    if len(langs) > 1 and not ({"lang", "language"} & set(source.mapping)) and source.path is not None:
        first = next(iter(stream_table(source.path)), None)
        if first is not None and "language_code" not in first[0]:
            raise LensError(f"{source.spec}: rows carry no language and {', '.join(langs)} are trained: say which, "
                            f"e.g. {source.spec.split('#')[0]}#language={langs[-1]}, or give a language column (#lang=COL)")


def check_full_data(text: str, langs: list[str]) -> None:
    """Before any model loads: every source opens and its first row has a prompt and a response (one line if not)."""
    for source in parse_sources(text):
        check_languages_known(source, langs)
        first = next(itertools.islice(source.rows(langs), 1), None)
        if first is None:
            raise LensError(f"{source.spec} has no rows: give a non-empty source")
        _shape(source, first[0])
