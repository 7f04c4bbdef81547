"""Probe texts and parallel training prompts, from files or the Hugging Face Hub.

Every source becomes one of two shapes: texts per language (probing; need not be
parallel) or rows {lang: text} (training and evaluation; parallel). Sources:

- ``embedded`` / ``embedded:heldout``: lensml's own prompts in en zh ja ko ar bn sw;
- a ``.jsonl`` file of rows ``{"en": ..., "zh": ...}`` (also the LENS authors' probe file), or a
  ``.json`` file holding a list of such rows;
- a ``.json`` file with ``Instances: [{"input_en": ..., "input_zh": ...}]`` (the authors' manipulation file);
- ``CohereForAI/aya_dataset`` or ``aya:PATH`` (jsonl/parquet with inputs, language_code): probing only;
- ``MBZUAI/Bactrian-X`` or ``bactrian-x:DIR`` (DIR/{lang}.json[l] with id, instruction, input, output): rows
  aligned by id, the ``output`` as each row's response;
- ``alpaca:DIR``: Alpaca-style files DIR/{lang}.json[l] (instruction, input, output), one per language, rows
  aligned by ``id`` when every row has one, else by position;
- any Hub dataset, ``hf:OWNER/NAME[:CONFIG][@SPLIT]#MAPPING``, or any local file with ``PATH#MAPPING``, where
  MAPPING is either one column per language, ``en=english,zh=chinese`` (parallel rows), or a text column and a
  language-code column, ``text=inputs,lang=language_code`` (texts per language; 2- or 3-letter codes).
  CONFIG and SPLIT are optional (default config, split ``train``); e.g.
  ``hf:ORG/pairs:v2@validation#en=english,zh=chinese``, ``hf:ORG/mixed#text=inputs,lang=language_code``
  or ``data/pairs.csv#en=source,zh=target``. The Aya and Bactrian-X forms above stay as shortcuts.

Responses (for the fine-tuning baselines, lensml.methods.sft) ride along in each row as
``"responses": {"en": ..., "zh": ...}``: the embedded data has them for every prompt, a parallel
``.jsonl``/``.json`` file may carry them in that form, and the Alpaca/Bactrian-X forms take them
from ``output``. ``load_rows(..., responses=[langs])`` requires them.

Files are UTF-8 ``.jsonl``, ``.json``, ``.csv``/``.tsv`` (with a header) or ``.parquet``. Checked before
any model loads, each problem named at its file and line (or item): invalid UTF-8 or JSON, a value that is
not a string, a language with no texts at all and, for parallel rows (training and evaluation data), any
row without a text in every language of ``--langs``. Probe texts need not be parallel.
"""

from __future__ import annotations

from pathlib import Path

from lensml.data.readers import iter_csv, iter_json_array, iter_jsonl, iter_table, read_json, read_jsonl
from lensml.errors import LensError
from lensml.languages import iso639_1
from lensml.runtime.models import bound_hub_requests

EMBEDDED_DIR = Path(__file__).parent / "embedded"
EMBEDDED_PARTS = ("part_a.jsonl", "part_b.jsonl", "part_c.jsonl")
HELDOUT_EVERY = 6  # every 6th embedded row is held out: 40 of 240, spread over all topics

AYA_HUB_ID = "CohereForAI/aya_dataset"
BACTRIAN_HUB_ID = "MBZUAI/Bactrian-X"

# The readers live in lensml.data.readers; they are re-exported here so data code has one import.
__all__ = ["embedded_rows", "iter_csv", "iter_json_array", "iter_jsonl", "iter_table", "load_rows", "load_texts",
           "read_json", "read_jsonl"]


def embedded_rows(split: str = "train") -> list[dict]:
    """The embedded prompts: 200 'train' rows (probing + training) or 40 'heldout' rows."""
    rows = [r for part in EMBEDDED_PARTS for r in read_jsonl(EMBEDDED_DIR / part)]
    keep = (lambda i: i % HELDOUT_EVERY == HELDOUT_EVERY - 1) if split == "heldout" else \
        (lambda i: i % HELDOUT_EVERY != HELDOUT_EVERY - 1)
    return [r for i, r in enumerate(rows) if keep(i)]


def _json_file(path: Path) -> list[tuple[dict, str]]:
    """A .json file: a list of rows, {"data": [...]}, or the authors' manipulation file (Instances)."""
    doc = read_json(path)
    if isinstance(doc, dict) and "Instances" in doc:
        if not isinstance(doc["Instances"], list):
            raise LensError(f"{path}: expected a LENS manipulation file with an 'Instances' list")
        rows = []
        for i, inst in enumerate(doc["Instances"]):
            if not isinstance(inst, dict):
                raise LensError(f"{path}: Instances item {i} is a {type(inst).__name__}, not an object with "
                                f"input_<lang> fields: fix the file")
            rows.append(({k[len("input_"):]: v for k, v in inst.items() if k.startswith("input_")},
                         f"{path}: Instances item {i}"))
        return rows
    if isinstance(doc, list) or (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
        return list(iter_table(path))
    raise LensError(f"{path}: expected a list of rows, {{\"data\": [...]}} or a LENS manipulation file with an "
                    f"'Instances' list")


def _hub_rows(dataset_id: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets  # optional dependency (lensml[hub])
    except ImportError as err:
        raise LensError(f"loading {dataset_id} from the Hub needs the datasets package: pip install 'lensml[hub]'") from err
    bound_hub_requests()
    try:
        return list(datasets.load_dataset(dataset_id, config, split=split))
    except Exception as err:  # network and Hub errors come in many types
        raise LensError(f"cannot load {dataset_id} from the Hub ({type(err).__name__}): pass a local path instead") from err


def _parse_mapping(text: str, source: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise LensError(f"data source {source}: the part after '#' must be lang=column pairs (en=english,zh=chinese) "
                        f"or text=COLUMN,lang=COLUMN")
    return {k.strip(): v.strip() for k, v in pairs}


def _split_source(source: str) -> tuple[str, dict[str, str] | None]:
    """SOURCE#MAPPING -> (SOURCE, mapping); a file whose own name holds '#' is taken whole."""
    if "#" in source and not Path(source).exists():
        base, mapping = source.rsplit("#", 1)
        return base, _parse_mapping(mapping, source)
    return source, None


def _hub_spec(spec: str) -> tuple[str, str | None, str]:
    """OWNER/NAME[:CONFIG][@SPLIT] -> (id, config, split)."""
    spec, _, split = spec.partition("@")
    dataset_id, _, config = spec.partition(":")
    if dataset_id.count("/") != 1:
        raise LensError(f"hf:{spec}: a Hub dataset id is OWNER/NAME, e.g. hf:MBZUAI/Bactrian-X:zh@train")
    return dataset_id, config or None, split or "train"


def _mapped(rows: list[tuple[dict, str]], mapping: dict[str, str], source: str) -> tuple[list[tuple[dict, str]], bool]:
    """Rows renamed by a mapping; (rows, True) when the mapping is text=,lang= (texts per language)."""
    if set(mapping) == {"text", "lang"}:
        out = []
        for row, where in rows:
            code = str(row.get(mapping["lang"], "")).strip().lower()
            lang = code if len(code) == 2 else iso639_1(code)  # Aya: "eng", "zho", "arb", "swh"
            if lang and row.get(mapping["text"]) is not None:
                out.append(({lang: row[mapping["text"]]}, where))
        return out, True
    columns = set(rows[0][0]) if rows else set()
    missing = [col for col in mapping.values() if col not in columns]
    if rows and missing:
        raise LensError(f"data source {source} has no column {missing[0]}: columns are {', '.join(sorted(columns))}")
    return [({lang: row.get(col) for lang, col in mapping.items()}, where) for row, where in rows], False


def _rows_with_where(source: str, langs: list[str]) -> tuple[list[tuple[dict, str]], bool]:
    """(rows, texts_only): texts_only rows carry one language each (probing data, not parallel)."""
    if source in ("embedded", "embedded:train", "embedded:heldout"):
        split = source.split(":")[1] if ":" in source else "train"
        return [(r, f"embedded:{split} row {i + 1}") for i, r in enumerate(embedded_rows(split))], False
    if source == BACTRIAN_HUB_ID or source.startswith("bactrian-x:") or source.startswith("alpaca:"):
        return [(r, f"{source} id {r.pop('_id')}") for r in _instruction_rows(source, langs)], False
    if source == AYA_HUB_ID or source.startswith("aya:"):
        return _aya(source), True
    base, mapping = _split_source(source)
    if base.startswith("hf:"):
        dataset_id, config, split = _hub_spec(base[3:])
        rows = [(r, f"{dataset_id}[{config or 'default'}/{split}] row {i}")
                for i, r in enumerate(_hub_rows(dataset_id, config, split))]
        if mapping is None:
            raise LensError(f"{source}: say which columns hold which language, e.g. {source}#en=english,zh=chinese")
    else:
        path = Path(base)
        if not path.is_file():
            raise LensError(f"data file {base} does not exist: check --probe-data / --train-data")
        rows = _json_file(path) if path.suffix.lower() == ".json" else list(iter_table(path))
        if not rows:
            raise LensError(f"{path} has no rows: give a non-empty file")
    if mapping is not None:
        return _mapped(rows, mapping, source)
    return rows, False


def _aya(source: str) -> list[tuple[dict, str]]:
    if source == AYA_HUB_ID:
        rows = [(r, f"{AYA_HUB_ID} row {i}") for i, r in enumerate(_hub_rows(AYA_HUB_ID, None, "train"))]
    else:
        rows = list(iter_table(Path(source.split(":", 1)[1])))
    return _mapped(rows, {"text": "inputs", "lang": "language_code"}, source)[0]


def _prompt_of(row: dict) -> str:
    """Alpaca/Bactrian-X prompt: the instruction, then the input on its own line when there is one."""
    return row["instruction"] + ("\n" + row["input"] if row.get("input") else "")


def _instruction_rows(source: str, langs: list[str]) -> list[dict]:
    """Parallel rows from per-language instruction files (Bactrian-X: aligned by id; Alpaca: by id or position)."""
    per_lang: dict[str, dict] = {}
    for lang in langs:
        if source == BACTRIAN_HUB_ID:
            rows, where = _hub_rows(BACTRIAN_HUB_ID, lang, "train"), f"{BACTRIAN_HUB_ID}[{lang}]"
        else:
            kind, folder = source.split(":", 1)
            folder = Path(folder)
            found = [f for f in (folder / f"{lang}.jsonl", folder / f"{lang}.json") if f.is_file()]
            if not found:
                raise LensError(f"{kind} folder {folder} has no {lang}.jsonl or {lang}.json: add it or drop '{lang}'")
            rows, where = [r for r, _ in iter_table(found[0])], str(found[0])
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or not isinstance(r.get("instruction"), str):
                raise LensError(f"{where} row {i + 1} has no 'instruction' text: Alpaca-style rows need "
                                f"instruction (and optionally input, output)")
        by_id = all("id" in r for r in rows)
        if source.startswith("bactrian-x:") or source == BACTRIAN_HUB_ID:
            if not by_id:
                raise LensError(f"{where}: Bactrian-X rows need an 'id' to align languages")
        per_lang[lang] = {(r["id"] if by_id else i): r for i, r in enumerate(rows)}
    common = sorted(set.intersection(*(set(v) for v in per_lang.values())), key=lambda k: (str(type(k)), k))
    out = []
    for key in common:
        row = {"_id": key, **{lang: _prompt_of(per_lang[lang][key]) for lang in langs}}
        responses = {lang: per_lang[lang][key]["output"] for lang in langs
                     if isinstance(per_lang[lang][key].get("output"), str)}
        if responses:
            row["responses"] = responses
        out.append(row)
    return out


def _has(row: dict, lang: str) -> bool:
    """A text in `lang` that is more than whitespace (values are strings once checked)."""
    value = row.get(lang)
    return isinstance(value, str) and bool(value.strip())


def _check_values(rows: list[tuple[dict, str]], langs: list[str], source: str, parallel: bool) -> None:
    """Every value of a requested language is a string, and every language has texts.

    Parallel rows (training and evaluation) also need a text in every language in every row:
    a gap is reported here, at its file and line, before any model loads. Probe texts need
    not be parallel, so there a missing or null value only means "no text in that language".
    """
    for row, where in rows:
        for lang in langs:
            value = row.get(lang)
            if value is not None and not isinstance(value, str):
                raise LensError(f"{where}: the '{lang}' text is a {type(value).__name__}, not a string: fix the row")
    for lang in langs:
        if not any(_has(row, lang) for row, _ in rows):
            raise LensError(f"data {source} has no '{lang}' texts: add them or drop '{lang}' from --langs")
    if not parallel:
        return
    for row, where in rows:
        for lang in langs:
            if not _has(row, lang):
                state = "null" if lang in row and row[lang] is None else "empty" if lang in row else "missing"
                raise LensError(f"{where}: the '{lang}' text is {state}: every row needs all of {','.join(langs)} "
                                f"(fix or drop the row, or drop '{lang}' from --langs)")


def _check_responses(rows: list[tuple[dict, str]], langs: list[str], source: str) -> None:
    """Every row has a non-empty response string in every language of langs."""
    for row, where in rows:
        resp = row.get("responses")
        if resp is not None and not isinstance(resp, dict):
            raise LensError(f"{where}: 'responses' is a {type(resp).__name__}, not an object "
                            f'{{"en": ..., "zh": ...}}: fix the row')
        for lang in langs:
            value = (resp or {}).get(lang)
            if not isinstance(value, str) or not value.strip():
                what = "has no responses" if resp is None else f"has no '{lang}' response"
                raise LensError(f"{where} {what}: this method trains on (prompt, response) pairs, so give data "
                                f"with responses (embedded, a JSONL with \"responses\": {{lang: text}}, "
                                f"alpaca:DIR or bactrian-x:DIR)")


def load_rows(source: str, langs: list[str], responses: list[str] | None = None) -> list[dict]:
    """Parallel rows {lang: text} from a source (see module docstring).

    Every row must hold a non-empty string in every language of `langs`; the first row
    that does not is an error naming its file and line (or item) and the language.
    With `responses`, every row must also hold a response in each of those languages.
    """
    rows, texts_only = _rows_with_where(source, langs)
    if texts_only:
        raise LensError(f"{source} holds texts per language, not parallel rows: use it for --probe-data only")
    if not rows:
        raise LensError(f"data {source} has no rows: give a non-empty source")
    _check_values(rows, langs, source, parallel=True)
    if responses:
        _check_responses(rows, responses, source)
    return [row for row, _ in rows]


def load_texts(source: str, langs: list[str]) -> dict[str, list[str]]:
    """Texts per language for probing (rows need not be parallel)."""
    rows, _ = _rows_with_where(source, langs)
    _check_values(rows, langs, source, parallel=False)
    return {lang: [row[lang] for row, _ in rows if _has(row, lang)] for lang in langs}

