"""`lens compare` of benchmark results: result documents side by side, shaped like Table 1 of the LENS paper.

The documents come from `lens eval` files or runs (lensml.results.benchmark_results reads them). Rows are the files (models); columns are each benchmark per language (En | Zh ...),
then per-language and overall averages of the multiple-choice accuracies, then the
generation benchmarks (MT-Bench) as "score (fidelity %)". A Δ row under each later
file gives its difference from the first file, so a before/after table reads at a
glance. Averages only use columns every file has, so the rows stay comparable.
Column names and kinds come from the benchmark registry; a task lensml does not know
(a result of a plugin benchmark) keeps its own name and is placed by its mode.
"""

from __future__ import annotations

from pathlib import Path

from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import GENERATION
from lensml.evaluation.lm_eval_format import result_entries
from lensml.io import write_text_atomic


def display_name(task: str) -> str:
    """The registry's display name of a task ("xcopa" -> "XCOPA"); unknown tasks keep their name."""
    benchmark = benchmarks.find(task)
    return benchmark.display_name if benchmark is not None else task


def _is_generation(task: str, entries: list[dict]) -> bool:
    benchmark = benchmarks.find(task)
    if benchmark is not None:
        return benchmark.kind == GENERATION
    return any(e.get("mode") == "generate" for e in entries if e["task"] == task)


def _lang_order(langs: list[str]) -> list[str]:
    return sorted(dict.fromkeys(langs), key=lambda lang: (lang != "en", langs.index(lang)))


def _fmt(x: float | None, digits: int = 1, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _mt_cell(entry: dict | None, base: dict | None = None) -> str:
    if entry is None:
        return "–"
    score = entry.get("score") if entry.get("judged") else None
    fid = 100 * entry["fidelity"] if entry.get("fidelity") is not None else None
    if base is None:
        return f"{_fmt(score, 2)} ({_fmt(fid)}%)"
    b_score = base.get("score") if base.get("judged") else None
    b_fid = 100 * base["fidelity"] if base.get("fidelity") is not None else None
    d_score = score - b_score if score is not None and b_score is not None else None
    d_fid = fid - b_fid if fid is not None and b_fid is not None else None
    return f"{_fmt(d_score, 2, True)} ({_fmt(d_fid, 1, True)})"


def comparison_table_of(docs: list[dict], labels: list[str]) -> str:
    """The table of result documents already in memory (e.g. a run's base and enhanced), one label per row."""
    if not docs or len(docs) != len(labels):
        raise LensError("a comparison needs at least one result and one label per result")
    entries = [result_entries(d) or [] for d in docs]
    cells: list[dict[tuple[str, str], dict]] = [{(e["task"], e["language"]): e for e in es} for es in entries]
    keys = [k for c in cells for k in c]
    tasks = list(dict.fromkeys(t for t, _ in keys))
    all_entries = [e for es in entries for e in es]
    gen_tasks = [t for t in tasks if _is_generation(t, all_entries)]
    columns = [(t, lang) for t in tasks if t not in gen_tasks for lang in _lang_order([lg for tk, lg in keys if tk == t])]
    mt_cols = [(t, lang) for t in gen_tasks for lang in _lang_order([lg for tk, lg in keys if tk == t])]
    shared = [c for c in columns if all(c in cell for cell in cells)]
    avg_langs = _lang_order([lang for _, lang in shared])

    def values(cell: dict) -> list[float | None]:
        row = [100 * cell[c]["value"] if c in cell else None for c in columns]
        for lang in avg_langs:
            vals = [100 * cell[c]["value"] for c in shared if c[1] == lang]
            row.append(sum(vals) / len(vals))
        if shared:
            row.append(sum(100 * cell[c]["value"] for c in shared) / len(shared))
        return row

    header = [f"{display_name(t)} {lang.capitalize()}" for t, lang in columns]
    header += [f"Avg {lang.capitalize()}" for lang in avg_langs] + (["Avg"] if shared else [])
    header += [f"{display_name(t)} {lang.capitalize()}" for t, lang in mt_cols]
    lines = ["| Model | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    base = values(cells[0])
    for k, (label, cell) in enumerate(zip(labels, cells)):
        row = values(cell)
        lines.append(f"| {label} | " + " | ".join([_fmt(v) for v in row] + [_mt_cell(cell.get(c)) for c in mt_cols]) + " |")
        if k > 0:
            delta = [v - b if v is not None and b is not None else None for v, b in zip(row, base)]
            mt = [_mt_cell(cell.get(c), cells[0].get(c)) if c in cell and c in cells[0] else "–" for c in mt_cols]
            lines.append(f"| Δ vs {labels[0]} | " + " | ".join([_fmt(v, 1, True) for v in delta] + mt) + " |")
    legend = ["", "Accuracy in % (metric 'value' of each result: acc); Avg over the benchmarks every file has."]
    if mt_cols:
        legend.append(f"{', '.join(display_name(t) for t in gen_tasks)}: judge score 1-10 (language fidelity in %); "
                      "– where no judge was configured or judging failed.")
    for label, es in zip(labels, entries):
        modes = sorted({e.get("mode", "?") for e in es})
        sizes = ", ".join(f"{e['task']}:{e['language']} n={e.get('n', '?')}" for e in es)
        legend.append(f"- {label}: mode {'/'.join(modes)}; {sizes}")
    return "\n".join(lines + legend) + "\n"


def write_table(text: str, out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise LensError(f"output {out} already exists: pass --overwrite or choose another --out")
    write_text_atomic(out, text)
