"""File readers: the one home of JSONL, JSON and CSV reading for data, benchmarks and judge prompts.

Each yields (row, where), `where` naming the file and line (or item) so that every
problem in a row can be reported where it is. Files must be UTF-8 (a BOM is fine);
anything else is a one-line error naming the file and line, not a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator

from lensml.errors import LensError


def _decode(data: bytes, path: Path, line_of=None) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1 if line_of is None else line_of
        raise LensError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}): "
                        f"re-save the file as UTF-8") from err


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise LensError(f"data file {path} does not exist: check the path") from err
    except IsADirectoryError as err:
        raise LensError(f"{path} is a folder, not a data file: point at a file") from err


def iter_jsonl(path: Path) -> Iterator[tuple[dict, str]]:
    """(row, "file:line") per non-empty line; a bad line is an error naming the file and line."""
    path = Path(path)
    for lineno, raw in enumerate(_read_bytes(path).split(b"\n"), 1):
        parsed = _json_line(raw, path, lineno)
        if parsed is not None:
            yield parsed


def _json_line(raw: bytes, path: Path, lineno: int) -> tuple[dict, str] | None:
    """(row, "file:line") of one JSONL line, None for a blank one; a bad line is an error naming both."""
    line = _decode(raw, path, lineno)
    if not line.strip():
        return None
    where = f"{path}:{lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise LensError(f"{where}: not valid JSON ({err.msg}): fix or remove the line") from err
    if not isinstance(row, dict):
        raise LensError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row, where


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file; an empty file is an error."""
    rows = [row for row, _ in iter_jsonl(path)]
    if not rows:
        raise LensError(f"{path} has no rows: give a non-empty file")
    return rows


def read_json(path: Path):
    """A whole JSON document (for files whose shape the caller inspects)."""
    path = Path(path)
    text = _decode(_read_bytes(path), path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LensError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


def iter_json_array(path: Path) -> Iterator[tuple[dict, str]]:
    """(row, "file: item i") of a JSON array or {"data": [...]}; an empty file has no rows."""
    path = Path(path)
    if not _decode(_read_bytes(path), path).strip():
        return
    doc = read_json(path)
    rows = doc if isinstance(doc, list) else doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise LensError(f"{path}: expected a JSON array of items")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LensError(f"{path}: item {i}: expected a JSON object")
        yield row, f"{path}: item {i}"


def iter_csv(path: Path, delimiter: str = ",") -> Iterator[tuple[dict, str]]:
    """(row, "file:line") of a CSV/TSV file with a header."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_decode(_read_bytes(path), path), newline=""), delimiter=delimiter)
    for row in reader:
        yield {k: v for k, v in row.items() if k is not None}, f"{path}:{reader.line_num}"


def stream_table(path: Path) -> Iterator[tuple[dict, str]]:
    """Rows of a data file read as they are needed, for data too large to hold (xsft-full's --sft.full-data).

    JSONL line by line, CSV/TSV row by row, Parquet batch by batch; a .json array has to be
    parsed whole (JSON has no streaming form in the standard library), so it is read as iter_table does.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise LensError(f"data file {path} does not exist: check the path" if not path.exists() else
                        f"{path} is a folder, not a data file: point at a file")
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # optional dependency, only for parquet copies of Hub datasets
        except ImportError as err:
            raise LensError(f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL)") from err
        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield row, f"{path}: row {i}"
                i += 1
        return
    if suffix == ".json":
        yield from iter_json_array(path)
        return
    if suffix in (".csv", ".tsv"):
        yield from _stream_csv(path, "\t" if suffix == ".tsv" else ",")
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            parsed = _json_line(raw, path, lineno)
            if parsed is not None:
                yield parsed


def _stream_csv(path: Path, delimiter: str) -> Iterator[tuple[dict, str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            for row in reader:
                yield {k: v for k, v in row.items() if k is not None}, f"{path}:{reader.line_num}"
    except UnicodeDecodeError as err:
        raise LensError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x}): re-save the file as UTF-8") from err


def iter_table(path: Path) -> Iterator[tuple[dict, str]]:
    """Rows of a .jsonl, .json (array), .csv/.tsv or .parquet file, chosen by its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if not path.is_file():
            raise LensError(f"data file {path} does not exist: check the path")
        try:
            import pyarrow.parquet as pq  # optional dependency, only for parquet copies of Hub datasets
        except ImportError as err:
            raise LensError(f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL)") from err
        return ((row, f"{path}: row {i}") for i, row in enumerate(pq.read_table(path).to_pylist()))
    if suffix == ".json":
        return iter_json_array(path)
    if suffix in (".csv", ".tsv"):
        return iter_csv(path, "\t" if suffix == ".tsv" else ",")
    return iter_jsonl(path)
