"""Multiple-choice benchmarks: task specs, loaders for Hub and local files, sampling.

Every format is normalised to the field names of the Hub dataset lm-evaluation-harness
uses, so a local copy and the Hub give the same prompts and the same numbers:

- XCOPA (`cambridgeltl/xcopa`, GitHub release jsonl): premise, choice1, choice2,
  question (cause/effect), label 0/1.
- XWinograd (`Muennighoff/xwinograd`: sentence with `_`, option1, option2, answer
  "1"/"2"), or the original TSV of yandex-research/crosslingual_winograd (no header;
  7 columns: language, source, English reference, raw text, NLTK tokens as JSON,
  pronoun as JSON [text, [start, end], tokens], candidates as JSON
  [[text, [start, end], tokens, correct], ...]). The pronoun span is replaced by `_`
  to give the Hub's form.
- XStoryCloze (`juletxara/xstory_cloze`): input_sentence_1..4, sentence_quiz1/2,
  answer_right_ending 1/2; local jsonl with these names, or CSV/TSV with a header
  using them or the original StoryCloze names (InputSentence1..4,
  RandomFifthSentenceQuiz1/2, AnswerRightEnding).
- M-MMLU (`alexandrainst/m_mmlu`): instruction, option_a..d, answer A-D; local jsonl
  or the release's JSON array.

Malformed data fails early with the file and line, never as a wrong accuracy.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lensml.data.loaders import iter_jsonl as read_jsonl
from lensml.errors import LensError

log = logging.getLogger(__name__)

MC_TASKS = ("xcopa", "xwinograd", "xstorycloze", "m_mmlu")
GEN_TASKS = ("mtbench",)
_ALIASES = {"mt-bench": "mtbench", "mt_bench": "mtbench", "mmlu": "m_mmlu", "m-mmlu": "m_mmlu",
            "xstory_cloze": "xstorycloze", "xwino": "xwinograd"}
#: Folder names of each task under --data-dir (the layout of ../shared/data).
DATA_DIR_NAMES = {"xcopa": "xcopa", "xwinograd": "xwinograd", "xstorycloze": "xstorycloze", "m_mmlu": "m_mmlu",
                  "mtbench": "mt-bench"}


@dataclass(frozen=True)
class HubSource:
    repo: str
    split: str
    lang_alias: dict[str, str] = field(default_factory=dict)


#: Hub datasets and the split lm-evaluation-harness scores.
HUB = {
    "xcopa": HubSource("cambridgeltl/xcopa", "test"),
    "xwinograd": HubSource("Muennighoff/xwinograd", "test", {"ja": "jp"}),
    "xstorycloze": HubSource("juletxara/xstory_cloze", "eval"),
    "m_mmlu": HubSource("alexandrainst/m_mmlu", "test"),
}
_EXTENSIONS = {"xcopa": (".jsonl", ".json"), "xwinograd": (".jsonl", ".json", ".tsv"),
               "xstorycloze": (".jsonl", ".json", ".csv", ".tsv"), "m_mmlu": (".jsonl", ".json"),
               "mtbench": (".jsonl",)}
_SPLIT_PREFERENCE = ("test", "eval", "validation", "val", "dev")
_STORY_ORIGINAL = {"InputSentence1": "input_sentence_1", "InputSentence2": "input_sentence_2",
                   "InputSentence3": "input_sentence_3", "InputSentence4": "input_sentence_4",
                   "RandomFifthSentenceQuiz1": "sentence_quiz1", "RandomFifthSentenceQuiz2": "sentence_quiz2",
                   "AnswerRightEnding": "answer_right_ending"}


@dataclass(frozen=True)
class TaskSpec:
    """One `name:lang[@path]` entry of --tasks."""

    name: str
    lang: str
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.lang}" + (f"@{self.path}" if self.path else "")


@dataclass
class MCItem:
    """A multiple-choice item in its Hub field names; `where` locates it for error messages."""

    task: str
    lang: str
    doc: dict
    label: int
    where: str


def parse_tasks(text: str) -> list[TaskSpec]:
    """`xcopa:zh,mtbench:zh@data/mt-bench/zh` -> specs; unknown names or duplicates are errors."""
    specs: list[TaskSpec] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        head, _, path = raw.partition("@")
        name, sep, lang = head.partition(":")
        name = _ALIASES.get(name.strip().lower(), name.strip().lower())
        lang = lang.strip()
        if not sep or not lang:
            raise LensError(f"task '{raw}' has no language: write name:lang, e.g. xcopa:zh")
        if name not in MC_TASKS + GEN_TASKS:
            raise LensError(f"unknown task '{name}' in '{raw}': use one of {', '.join(MC_TASKS + GEN_TASKS)}")
        if "@" in raw and not path.strip():
            raise LensError(f"task '{raw}' has an empty path after '@'")
        spec = TaskSpec(name, lang, path.strip() or None)
        if any(s.name == spec.name and s.lang == spec.lang for s in specs):
            raise LensError(f"task {name}:{lang} is listed twice in --tasks")
        specs.append(spec)
    if not specs:
        raise LensError("no task given: pass e.g. --tasks xcopa:zh,mtbench:zh")
    return specs


def sample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """At most `limit` of n indices, drawn with a fixed seed and kept in file order."""
    if limit is None or n <= limit:
        return list(range(n))
    if limit < 1:
        raise LensError(f"--limit must be at least 1, got {limit}")
    return sorted(random.Random(seed).sample(range(n), limit))


def _tokens(path: Path) -> set[str]:
    return set(re.split(r"[^A-Za-z0-9]+", str(path).lower()))


def resolve_local(spec: TaskSpec, path: Path) -> Path:
    """A file as given, or the one file of a directory that fits the task and language."""
    if path.is_file():
        return path
    if not path.exists():
        raise LensError(f"data path {path} of task {spec.name}:{spec.lang} does not exist")
    exts = _EXTENSIONS[spec.name]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(exts))
    if spec.name == "mtbench":
        files = [p for p in files if p.name == "question.jsonl"] or files
    alias = HUB[spec.name].lang_alias.get(spec.lang) if spec.name in HUB else None
    langs = {spec.lang.lower(), (alias or spec.lang).lower()}
    with_lang = [p for p in files if langs & _tokens(p.relative_to(path))]
    candidates = with_lang or files
    for split in _SPLIT_PREFERENCE:
        if len(candidates) > 1:
            narrowed = [p for p in candidates if split in _tokens(p.relative_to(path))]
            candidates = narrowed or candidates
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LensError(f"directory {path} has no {'/'.join(exts)} file for task {spec.name}:{spec.lang}")
    listing = ", ".join(str(p) for p in candidates[:6])
    raise LensError(f"directory {path} has several files for {spec.name}:{spec.lang} ({listing}): point at one file")


def data_path(spec: TaskSpec, data_dir: str | None) -> Path | None:
    """The local path of a spec: its @path, else DATA_DIR/<task>/<lang> when that exists."""
    if spec.path:
        return Path(spec.path).expanduser()
    if data_dir:
        candidate = Path(data_dir).expanduser() / DATA_DIR_NAMES[spec.name] / spec.lang
        if candidate.exists():
            return candidate
    return None


# ---------------------------------------------------------------- readers: (row, where)

def _read_json_array(path: Path) -> Iterator[tuple[dict, str]]:
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise LensError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    rows = doc if isinstance(doc, list) else doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise LensError(f"{path}: expected a JSON array of items")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LensError(f"{path}: item {i}: expected a JSON object")
        yield row, f"{path}: item {i}"


def _read_table(path: Path) -> Iterator[tuple[dict, str]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        for row in reader:
            yield {_STORY_ORIGINAL.get(k, k): v for k, v in row.items() if k is not None}, f"{path}:{reader.line_num}"


def _read_xwinograd_tsv(path: Path, lang: str) -> Iterator[tuple[dict, str]]:
    """Rows of the yandex-research TSV for one language, turned into the Hub's `_` form."""
    wanted = {lang, HUB["xwinograd"].lang_alias.get(lang, lang)}
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


def local_rows(spec: TaskSpec, path: Path) -> Iterator[tuple[dict, str]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        return _read_json_array(path)
    if suffix == ".tsv" and spec.name == "xwinograd":
        return _read_xwinograd_tsv(path, spec.lang)
    if suffix in (".csv", ".tsv") and spec.name == "xstorycloze":
        return _read_table(path)
    raise LensError(f"{path}: unsupported file type for {spec.name}: use {'/'.join(_EXTENSIONS[spec.name])}")


def hub_rows(repo: str, config: str | None, split: str, hint: str) -> Iterator[tuple[dict, str]]:
    """Rows of a Hub dataset through `datasets` (optional dependency, imported only here)."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise LensError(f"loading {repo} from the Hub needs the datasets package: pip install 'lensml[hub]', "
                        f"or use a local copy with {hint}@PATH") from err
    try:
        data = load_dataset(repo, config, split=split)
    except Exception as err:  # datasets raises many types (connection, missing config, ...): all are user-facing
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LensError(f"cannot load {repo} (config {config}, split {split}) from the Hub: {first}; "
                        f"use a local copy with {hint}@PATH") from err
    for i, row in enumerate(data):
        yield dict(row), f"{repo}[{config}/{split}] row {i}"


# ---------------------------------------------------------------- validation per task

def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LensError(f"{where}: missing field '{key}'")
    return str(value)


def _label(row: dict, key: str, allowed: dict, where: str) -> int:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LensError(f"{where}: missing field '{key}'")
    norm = value.strip() if isinstance(value, str) else value
    if isinstance(norm, float) and norm.is_integer():
        norm = int(norm)
    for k, v in allowed.items():
        if norm == k or str(norm) == str(k):
            return v
    raise LensError(f"{where}: {key} {value!r} out of range (expected one of {', '.join(map(str, allowed))})")


def normalise(task: str, lang: str, row: dict, where: str) -> MCItem:
    """Check the fields a task needs and return the item with its gold index."""
    if task == "xcopa":
        doc = {k: _text(row, k, where) for k in ("premise", "choice1", "choice2", "question")}
        if doc["question"] not in ("cause", "effect"):
            raise LensError(f"{where}: question {doc['question']!r} must be 'cause' or 'effect'")
        label = _label(row, "label", {0: 0, 1: 1}, where)
    elif task == "xwinograd":
        doc = {k: _text(row, k, where) for k in ("sentence", "option1", "option2")}
        if "_" not in doc["sentence"]:
            raise LensError(f"{where}: sentence has no '_' blank")
        label = _label(row, "answer", {"1": 0, "2": 1}, where)
    elif task == "xstorycloze":
        keys = [f"input_sentence_{i}" for i in range(1, 5)] + ["sentence_quiz1", "sentence_quiz2"]
        doc = {k: _text(row, k, where) for k in keys}
        label = _label(row, "answer_right_ending", {1: 0, 2: 1}, where)
    elif task == "m_mmlu":
        doc = {k: _text(row, k, where) for k in ("instruction", "option_a", "option_b", "option_c", "option_d")}
        label = _label(row, "answer", {"A": 0, "B": 1, "C": 2, "D": 3}, where)
    else:
        raise LensError(f"task {task} is not a multiple-choice task")
    return MCItem(task, lang, doc, label, where)


def load_items(spec: TaskSpec, limit: int | None = 1000, seed: int = 1234,
               data_dir: str | None = None) -> tuple[list[MCItem], str]:
    """Validated items of a multiple-choice task (at most `limit`, seeded) and their source."""
    local = data_path(spec, data_dir)
    if local is not None:
        path = resolve_local(spec, local)
        rows, source = local_rows(spec, path), str(path)
    else:
        hub = HUB[spec.name]
        config = hub.lang_alias.get(spec.lang, spec.lang)
        rows, source = hub_rows(hub.repo, config, hub.split, str(spec)), f"hf:{hub.repo}/{config}:{hub.split}"
    items = [normalise(spec.name, spec.lang, row, where) for row, where in rows]
    if not items:
        lang_note = f" for language {spec.lang}" if spec.name == "xwinograd" else ""
        raise LensError(f"{source}: no items{lang_note} (empty file?)")
    chosen = [items[i] for i in sample_indices(len(items), limit, seed)]
    log.info("%s: %d of %d items from %s", spec, len(chosen), len(items), source)
    return chosen, source
