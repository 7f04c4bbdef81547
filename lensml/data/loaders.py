"""Probe texts and parallel training prompts, from files or the Hugging Face Hub.

Every source becomes one of two shapes: texts per language (probing; need not be
parallel) or rows {lang: text} (training; parallel). Sources:

- ``embedded`` / ``embedded:heldout``: lensml's own prompts in en zh ja ko ar bn sw;
- a ``.jsonl`` file of rows ``{"en": ..., "zh": ...}`` (also the LENS authors' probe file);
- a ``.json`` file with ``Instances: [{"input_en": ..., "input_zh": ...}]`` (the authors' manipulation file);
- ``CohereForAI/aya_dataset`` or ``aya:PATH`` (jsonl/parquet with inputs, language_code): probing only;
- ``MBZUAI/Bactrian-X`` or ``bactrian-x:DIR`` (DIR/{lang}.json[l] with id, instruction, input): rows aligned by id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from lensml.errors import LensError

EMBEDDED_DIR = Path(__file__).parent / "embedded"
EMBEDDED_PARTS = ("part_a.jsonl", "part_b.jsonl", "part_c.jsonl")
HELDOUT_EVERY = 6  # every 6th embedded row is held out: 40 of 240, spread over all topics

AYA_HUB_ID = "CohereForAI/aya_dataset"
BACTRIAN_HUB_ID = "MBZUAI/Bactrian-X"
# Aya labels languages with ISO 639-3 codes.
ISO3 = {"en": "eng", "zh": "zho", "ja": "jpn", "ko": "kor", "ar": "arb", "bn": "ben", "sw": "swh", "fr": "fra",
        "de": "deu", "es": "spa", "ru": "rus", "vi": "vie", "th": "tha", "id": "ind", "tr": "tur", "hi": "hin"}


def iter_jsonl(path: Path) -> Iterator[tuple[dict, str]]:
    """(row, "file:line") per non-empty line; a bad line is an error naming the file and line."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise LensError(f"{where}: not valid JSON ({err.msg}): fix or remove the line") from err
            if not isinstance(row, dict):
                raise LensError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield row, where


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file; an empty file is an error."""
    rows = [row for row, _ in iter_jsonl(path)]
    if not rows:
        raise LensError(f"{path} has no rows: give a non-empty file")
    return rows


def embedded_rows(split: str = "train") -> list[dict]:
    """The embedded prompts: 200 'train' rows (probing + training) or 40 'heldout' rows."""
    rows = [r for part in EMBEDDED_PARTS for r in read_jsonl(EMBEDDED_DIR / part)]
    keep = (lambda i: i % HELDOUT_EVERY == HELDOUT_EVERY - 1) if split == "heldout" else \
        (lambda i: i % HELDOUT_EVERY != HELDOUT_EVERY - 1)
    return [r for i, r in enumerate(rows) if keep(i)]


def _lens_manipulation(path: Path) -> list[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LensError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("Instances"), list):
        raise LensError(f"{path}: expected a LENS manipulation file with an 'Instances' list")
    return [{k[len("input_"):]: v for k, v in inst.items() if k.startswith("input_")} for inst in doc["Instances"]]


def _aya(source: str, langs: list[str]) -> dict[str, list[str]]:
    if source == AYA_HUB_ID:
        rows = _hub_rows(AYA_HUB_ID, None, "train")
    else:
        path = Path(source.split(":", 1)[1])
        rows = _read_table(path)
    by_code: dict[str, list[str]] = {}
    for row in rows:
        by_code.setdefault(row.get("language_code", ""), []).append(row["inputs"])
    return {lang: by_code.get(ISO3.get(lang, lang), []) for lang in langs}


def _bactrian(source: str, langs: list[str]) -> list[dict]:
    per_lang: dict[str, dict] = {}
    for lang in langs:
        if source == BACTRIAN_HUB_ID:
            rows = _hub_rows(BACTRIAN_HUB_ID, lang, "train")
        else:
            folder = Path(source.split(":", 1)[1])
            files = [folder / f"{lang}.{ext}" for ext in ("jsonl", "json")]
            found = [f for f in files if f.is_file()]
            if not found:
                raise LensError(f"Bactrian-X folder {folder} has no {lang}.jsonl or {lang}.json: add it or drop '{lang}'")
            rows = _read_table(found[0])
        per_lang[lang] = {r["id"]: (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")) for r in rows}
    common = sorted(set.intersection(*(set(v) for v in per_lang.values())))
    return [{lang: per_lang[lang][i] for lang in langs} for i in common]


def _read_table(path: Path) -> list[dict]:
    if not path.is_file():
        raise LensError(f"data file {path} does not exist: check the path")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only for parquet copies of Hub datasets
        return pq.read_table(path).to_pylist()
    if path.suffix == ".json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, list) else doc.get("data", [])
    return read_jsonl(path)


def _hub_rows(dataset_id: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError as err:
        raise LensError(f"loading {dataset_id} from the Hub needs the datasets package: pip install 'lensml[hub]'") from err
    try:
        return list(datasets.load_dataset(dataset_id, config, split=split))
    except Exception as err:  # network and Hub errors come in many types
        raise LensError(f"cannot load {dataset_id} from the Hub ({type(err).__name__}): pass a local path instead") from err


def load_rows(source: str, langs: list[str]) -> list[dict]:
    """Parallel rows {lang: text} from a source (see module docstring)."""
    if source in ("embedded", "embedded:train", "embedded:heldout"):
        rows = embedded_rows(source.split(":")[1] if ":" in source else "train")
    elif source == BACTRIAN_HUB_ID or source.startswith("bactrian-x:"):
        rows = _bactrian(source, langs)
    else:
        path = Path(source)
        if not path.is_file():
            raise LensError(f"data file {source} does not exist: check --probe-data / --train-data")
        rows = _lens_manipulation(path) if path.suffix == ".json" else read_jsonl(path)
    for lang in langs:
        if not any(lang in r for r in rows):
            raise LensError(f"data {source} has no '{lang}' texts: add them or drop '{lang}' from --langs")
    return rows


def load_texts(source: str, langs: list[str]) -> dict[str, list[str]]:
    """Texts per language for probing (rows need not be parallel)."""
    if source == AYA_HUB_ID or source.startswith("aya:"):
        texts = _aya(source, langs)
        for lang, found in texts.items():
            if not found:
                raise LensError(f"Aya data {source} has no '{lang}' texts: drop '{lang}' from --langs")
        return texts
    rows = load_rows(source, langs)
    return {lang: [r[lang] for r in rows if r.get(lang)] for lang in langs}
