"""Benchmark results read back: a `lens eval` result file, or a run's base and enhanced results.

Result files of both shapes are read: lm-eval's (lensml's entries under `lensml_results`) and the
earlier one (the entries as the `results` list), so results written by older lensml still compare.

`lens compare FILES` turns them into the table of lensml.results.benchmark_table; a run folder
gives two rows, read from its RunReport.
"""

from __future__ import annotations

import json
from pathlib import Path

from lensml.errors import LensError
from lensml.evaluation.lm_eval_format import result_entries
from lensml.results.benchmark_table import comparison_table_of
from lensml.results.report import RunReport
from lensml.results.rundir import RunDir


def _check_result(doc, where: str) -> dict:
    """A result document of either shape (lm-eval's with `lensml_results`, or the earlier `results` list)."""
    entries = result_entries(doc)
    if entries is None:
        raise LensError(f"{where} is not a lens eval result (no 'lensml_results' or 'results' list): point at the "
                        f"JSON lens eval wrote, or a run folder")
    for i, entry in enumerate(entries):
        for key in ("task", "language", "value"):
            if key not in entry:
                raise LensError(f"{where}: result {i} has no '{key}'")
    return doc


def load_results(path: str | Path) -> list[tuple[str, dict]]:
    """(label, result) pairs of a `lens eval` result file, or of a run (its folder or report.json).

    A run gives two rows, its base and its enhanced model, read from the RunReport; a run
    without --eval-tasks has no benchmark results and is refused with a clear message.
    """
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).report
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise LensError(f"result file {path} does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LensError(f"{path} is not valid JSON: point at a lens eval result or a run folder") from err
    if not (isinstance(doc, dict) and "schema_version" in doc):
        return [(f"{doc.get('model', '?') if isinstance(doc, dict) else '?'} ({path.name})",
                 _check_result(doc, str(path)))]
    report = RunReport.from_file_doc(doc, path)
    if not report.benchmarks:
        raise LensError(f"run {path.parent} has no benchmark results: run it with --eval-tasks, or `lens eval` its model")
    return [(f"{report.model} ({path.parent.name}: {side})", _check_result(result, f"{path} ({side})"))
            for side, result in report.benchmarks.items()]


def load_result(path: str | Path) -> dict:
    """A single `lens eval` result document."""
    rows = load_results(path)
    if len(rows) != 1:
        raise LensError(f"{path} holds {len(rows)} results (a run): use load_results")
    return rows[0][1]


def comparison_table(paths: list[str | Path]) -> str:
    """The Markdown table (with a short legend) comparing the given result files."""
    if not paths:
        raise LensError("lens compare needs at least one result file or run folder")
    rows = [row for p in paths for row in load_results(p)]
    return comparison_table_of([doc for _, doc in rows], [label for label, _ in rows])
