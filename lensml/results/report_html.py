"""OUT/report.html: a run as one page a person reads in a browser.

Why a page: 80 answer pairs are read side by side, not in a JSONL file, and the question asked of
them is narrow ("the enhanced answers that loop", "the Swahili ones"). So the page holds the
before/after table of report.json, every picture of the folder, and one row per held-out prompt
with both answers and what was counted on each side (answers.jsonl), filterable by language and
by check. One self-contained file: CSS and JS inline, pictures as data URIs, no external library
and no network (its Content-Security-Policy forbids any), so it can be mailed or archived as is.

Answers are model output: every text goes through html.escape, and the policy also blocks any
script that is not the page's own.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
from pathlib import Path

from lensml.data.readers import iter_jsonl
from lensml.errors import LensError
from lensml.io import write_text_atomic
from lensml.results.benchmark_table import comparison_table_of
from lensml.results.report import SIDES, RunReport
from lensml.results.rundir import RunDir

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The per-language columns of the before/after table: (metric of LanguageScores, heading).
TABLE_METRICS = (("fidelity", "fidelity"), ("clean_fidelity", "clean"), ("echo", "echo"), ("loop", "loop"),
                 ("empty", "empty"))
#: The checks an answer can be filtered by, as data-flags tokens "<side>:<check>".
CHECKS = ("clean", "unclean", "wrong-language", "echo", "loop", "empty")
ROW_KEYS = ("lang", "prompt", "base", "enhanced", "base_check", "enhanced_check")


def write_report_html(run: RunDir, report: RunReport | None = None) -> Path:
    """Write OUT/report.html from the folder's report.json, answers.jsonl and pictures; returns its path."""
    report = report if report is not None else RunReport.load(run.path)
    rows = read_answers(run.answers)
    text = render(report, rows, pictures(run), title=run.path.name)
    write_text_atomic(run.report_html, text)
    return run.report_html


def read_answers(path: Path) -> list[dict]:
    """The rows of answers.jsonl (lensml.evaluation.quick.compare writes them); a row without the keys the
    page shows is an error naming its line."""
    if not path.is_file():
        raise LensError(f"{path} does not exist: report.html needs a run with the quick evaluation on")
    rows = []
    for row, where in iter_jsonl(path):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise LensError(f"{where}: not an answers.jsonl row of lensml (missing {', '.join(missing)}): "
                            f"re-run the job that wrote it")
        rows.append(row)
    return rows


def pictures(run: RunDir) -> list[tuple[str, bytes]]:
    """(name relative to the folder, PNG bytes) of every picture of the folder and of OUT/analysis."""
    found = []
    for folder in (run.path, run.analysis):
        if folder.is_dir():
            found += sorted(p for p in folder.glob("*.png") if p.is_file() and not p.name.startswith("."))
    out = []
    for path in found:
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            log.warning("%s is named .png but is not a PNG file: left out of report.html", path)
            continue
        out.append((path.relative_to(run.path).as_posix(), data))
    return out


def answer_flags(row: dict) -> list[str]:
    """The data-flags tokens of one answer pair: "<side>:<check>" for every check that holds on that side."""
    flags = []
    for side in ("enhanced", "base"):
        check = row[f"{side}_check"]
        held = {"clean": bool(check.get("clean")), "unclean": not check.get("clean"),
                "wrong-language": not check.get("right_language", check.get("detected") == row["lang"]),
                "echo": bool(check.get("echo")), "loop": bool(check.get("loop")), "empty": bool(check.get("empty"))}
        flags += [f"{side}:{name}" for name in CHECKS if held[name]]
    return flags


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render(report: RunReport, rows: list[dict], images: list[tuple[str, bytes]], title: str = "") -> str:
    """The whole page as text."""
    heading = f"{title}: " if title else ""
    parts = [f"<h1>{_e(heading)}{_e(report.model)} + {_e(report.method or '-')}</h1>",
             f"<p class=\"meta\">central language {_e(report.central)}; languages {_e(', '.join(report.languages))}"
             + (f"; {report.quick_eval.samples} held-out prompts per language" if report.quick_eval else "") + "</p>",
             _scores_section(report), _pictures_section(images), _answers_section(rows)]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(heading)}{_e(report.model)} report</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n{body}\n<script>{JS}</script>\n</body>\n</html>\n")


def _scores_section(report: RunReport) -> str:
    parts = ["<h2>Before and after</h2>"]
    q = report.quick_eval
    if q is not None:
        head = "".join(f"<th>{_e(name)} {side}</th>" for _, name in TABLE_METRICS for side in SIDES)
        lines = [f"<table id=\"scores\"><thead><tr><th>language</th><th>n</th>{head}</tr></thead><tbody>"]
        for lang in report.languages:
            b, e = q.base[lang], q.enhanced[lang]
            cells = "".join(f"<td data-metric=\"{key}\" data-side=\"{side}\">{_pct(getattr(s, key))}</td>"
                            for key, _ in TABLE_METRICS for side, s in (("base", b), ("enhanced", e)))
            lines.append(f"<tr data-language=\"{_e(lang)}\"><th>{_e(lang)}</th><td>{b.n}</td>{cells}</tr>")
        lines.append("</tbody></table>")
        r = q.retention
        lines.append(f"<p id=\"retention\">{_e(report.central)} answer NLL (the base model's own answers): "
                     f"base {r.base_nll:.4f}, enhanced {r.enhanced_nll:.4f} ({100 * r.relative_change:+.2f}%)</p>")
        parts += lines
    else:
        parts.append("<p>No quick evaluation in this run.</p>")
    t = report.train
    if t is not None:
        final = t.final.get("loss")
        parts.append(f"<p id=\"training\">trained {t.steps} steps ({_e(t.method)}), peak lr {t.lr:.2e}, "
                     f"{100 * t.trainable_share:.1f}% of parameters"
                     + (f", final loss {final:.4g}" if isinstance(final, (int, float)) else "")
                     + (" &mdash; <strong>unchanged: this model is the base model</strong>" if t.unchanged else "")
                     + "</p>")
    if report.benchmarks and all(side in report.benchmarks for side in SIDES):
        parts.append("<h3>Benchmarks</h3>" + markdown_html(
            comparison_table_of([report.benchmarks[s] for s in SIDES], list(SIDES)), "benchmarks"))
    if report.timings_s:
        parts.append("<p class=\"meta\">timings: " + _e(", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items()))
                     + "</p>")
    return "\n".join(parts)


def markdown_html(text: str, table_id: str) -> str:
    """A Markdown table (and the lines around it) as HTML: what lensml's own tables print, nothing more."""
    out, table = [], []

    def flush():
        if table:
            head, *body = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table
                           if not set(line.replace("|", "").strip()) <= set("-: ")]
            out.append(f"<table id=\"{table_id}\"><thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>"
                                                          for r in body) + "</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            out.append(f"<p class=\"meta\">{_e(line)}</p>")
    flush()
    return "\n".join(out)


def _pictures_section(images: list[tuple[str, bytes]]) -> str:
    if not images:
        return ""
    figures = "".join(f"<figure><img src=\"data:image/png;base64,{base64.b64encode(data).decode('ascii')}\" "
                      f"alt=\"{_e(name)}\"><figcaption>{_e(name)}</figcaption></figure>" for name, data in images)
    return f"<h2>Pictures</h2>\n<div class=\"pictures\">{figures}</div>"


def _check_html(check: dict, lang: str) -> str:
    detected = check.get("detected")
    badges = [f"<span class=\"badge {'ok' if detected == lang else 'bad'}\">{_e(detected or 'none')}</span>"]
    badges += [f"<span class=\"badge bad\">{name}</span>" for name in ("echo", "loop", "empty") if check.get(name)]
    badges.append("<span class=\"badge ok\">clean</span>" if check.get("clean") else "")
    return "".join(badges)


def _answers_section(rows: list[dict]) -> str:
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    flags = [answer_flags(r) for r in rows]
    counts: dict[str, int] = {}
    for fl in flags:
        for f in fl:
            counts[f] = counts.get(f, 0) + 1
    lang_opts = "".join(f"<option value=\"{_e(lang)}\">{_e(lang)} ({sum(r['lang'] == lang for r in rows)})</option>"
                        for lang in langs)
    flag_opts = "".join(f"<option value=\"{side}:{name}\">{side}: {name} ({counts.get(f'{side}:{name}', 0)})</option>"
                        for side in ("enhanced", "base") for name in CHECKS)
    body = []
    for i, (row, fl) in enumerate(zip(rows, flags), 1):
        lang = row["lang"]
        body.append(f"<tr data-language=\"{_e(lang)}\" data-flags=\"{_e(' '.join(fl))}\"><td>{i}</td>"
                    f"<td>{_e(lang)}</td><td class=\"text\">{_e(row['prompt'])}</td>"
                    f"<td class=\"text\">{_e(row['base'])}<div>{_check_html(row['base_check'], lang)}</div></td>"
                    f"<td class=\"text\">{_e(row['enhanced'])}<div>{_check_html(row['enhanced_check'], lang)}</div>"
                    f"</td></tr>")
    return (f"<h2>Answers</h2>\n<form class=\"filters\"><label>language <select id=\"filter-language\">"
            f"<option value=\"\">all ({len(rows)})</option>{lang_opts}</select></label> "
            f"<label>check <select id=\"filter-flag\"><option value=\"\">any</option>{flag_opts}</select></label> "
            f"<span>showing <span id=\"shown\">{len(rows)}</span> of {len(rows)}</span></form>\n"
            f"<table id=\"answers\"><thead><tr><th>#</th><th>language</th><th>prompt</th><th>base answer</th>"
            f"<th>enhanced answer</th></tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>")


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
thead th{background:#f3f3f3;position:sticky;top:0}
#scores td,#benchmarks td{text-align:right;font-variant-numeric:tabular-nums}
#answers td.text{white-space:pre-wrap;max-width:32em;overflow-wrap:anywhere}
.meta{color:#555}
.pictures img{max-width:100%;border:1px solid #ddd}
figure{margin:0 0 1em}
.badge{display:inline-block;font-size:.75em;border-radius:3px;padding:0 .35em;margin:.3em .3em 0 0}
.badge.ok{background:#d8f0d8}.badge.bad{background:#f6d5d5}
.filters{margin:.5em 0}
"""
JS = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('#answers tbody tr'));
  var lang = document.getElementById('filter-language');
  var flag = document.getElementById('filter-flag');
  var shown = document.getElementById('shown');
  function apply() {
    var n = 0;
    rows.forEach(function (row) {
      var ok = (!lang.value || row.dataset.language === lang.value) &&
               (!flag.value || row.dataset.flags.split(' ').indexOf(flag.value) >= 0);
      row.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = String(n);
  }
  lang.addEventListener('change', apply);
  flag.addEventListener('change', apply);
  apply();
})();
"""
#: Only the page's own script runs (by its hash): an answer that escaped escaping still could not.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       f"script-src 'sha256-{base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()}'; "
       "form-action 'none'; base-uri 'none'")
