"""`lens compare RUN_DIR...`: LENS and its alternatives side by side (the paper's Tables 1 and 5 in one).

Each run folder gives one row, labelled by the folder's name (two `lens` runs in two folders are two rows
one can tell apart; a name given twice gets its parent folders until it is unique), with its method in a
column of its own, read from report.json and manifest.json; the
first run's "before" side gives a "base" row (no training), which every other run of the
same model and data must match (they evaluate the same model on the same prompts, so a
mismatch means the runs are not comparable and is said, not hidden). Runs of another model,
central language or language set are put in their own group with its own heading.

Columns: per target language fidelity, clean fidelity, echo and loop shares (held-out
prompts, n given); central-language retention (fidelity and the NLL of the base model's own
answers, relative change); benchmark results where the runs had --eval-tasks; then the paper's
Table 5 for our runs: trainable-parameter share, instruction rows trained on, training seconds
(LENS's reference pass runs inside the probe when the prompts coincide), total seconds, peak
memory; with reference="paper", the paper's own Table 5 figures beside each of its methods.

Rows are the paper's methods as the paper ran them, or controls (marked): comparisons lensml adds
(steer, xsft-top) and paper methods run otherwise (a baseline given --train.start-layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lensml.errors import LensError
from lensml.io import write_json_atomic, write_text_atomic
from lensml.results.benchmark_table import comparison_table_of
from lensml.results.plots import pyplot
from lensml.results.report import LanguageScores, RunReport
from lensml.results.rundir import RunDir


@dataclass
class RunRow:
    """One run folder, as the table reads it; label: what the table calls it (the folder's name, made unique)."""

    label: str
    path: Path
    report: RunReport
    manifest: dict

    @property
    def group(self) -> tuple:
        """What must be equal for rows to share a table: model, central language, languages, eval data."""
        cfg = self.manifest.get("config", {})
        return (self.report.model, self.report.central, tuple(self.report.languages),
                cfg.get("eval", {}).get("data"), cfg.get("eval", {}).get("samples"))

    @property
    def peak_memory(self) -> dict:
        return self.manifest.get("peak_memory", {})

    @property
    def resolved(self) -> dict:
        return self.manifest.get("train_resolved") or {}

    @property
    def role(self) -> str:
        """"paper" or "control": as the run recorded it; for runs from before roles were recorded, a paper
        method counts as the paper's when it trained what the paper trains (LENS its top layers, the others all)."""
        if self.resolved.get("role") in ("paper", "control"):
            return self.resolved["role"]
        method, tr = self.report.method, self.report.train
        full = tr is not None and tr.total_parameters and tr.trainable_parameters == tr.total_parameters
        return "paper" if method == "lens" or (method in PAPER_TABLE5 and full) else "control"

    @property
    def method_text(self) -> str:
        """The method column: the method, marked when it is a control."""
        return (self.report.method or "?") + (" (control)" if self.role == "control" else "")

    @property
    def instruction_rows(self) -> int | None:
        """Training items the method learned from (pairs for fine-tuning, prompt rows for LENS)."""
        rows = self.resolved.get("instruction_rows")
        return rows if rows is not None else self.manifest.get("data", {}).get("train_rows")


#: The LENS paper's Table 5 (LLaMA-3-8B-Instruct, bilingual, one A800): trainable share, instruction data,
#: training time. What `lens compare --reference paper` prints beside our runs of the same methods.
PAPER_TABLE5: dict[str, dict[str, str]] = {
    "lens": {"trainable": "5.43%", "data": "0.8K", "time": "2 min 08 s"},
    "xsft": {"trainable": "100%", "data": "0.8K", "time": "5 min 33 s"},
    "xsft-full": {"trainable": "100%", "data": "111.5K", "time": "192 min 35 s"},
    "sdrrl": {"trainable": "100%", "data": "4K", "time": "11 min 30 s"},
    "qalign": {"trainable": "100%", "data": "0.8K", "time": "12 min 03 s"},
}
REFERENCES = ("paper",)


def load_run(path: str | Path) -> RunRow:
    """A `lens run` folder with a report, a manifest and a quick evaluation."""
    run = RunDir(path)
    path = run.path
    if not path.is_dir():
        raise LensError(f"{path} is not a run folder: `lens compare` of methods takes folders written by `lens run`")
    if not run.report.is_file():
        raise LensError(f"run folder {path} has no results (no report.json: the run did not finish): rerun it, or "
                        f"leave it out of `lens compare`")
    report = RunReport.load(run.path)
    manifest = run.read_manifest("point at a folder written by `lens run`")  # names the file and line of bad JSON
    if report.quick_eval is None:
        raise LensError(f"run {path} has no quick evaluation (it ran with --eval.no-enabled): re-run it with the "
                        f"evaluation on to compare it")
    return RunRow(path.resolve().name or str(path), path, report, manifest)


def check_compared(paths: list[str | Path]) -> None:
    """When some of the paths are `lens run` folders, every folder must be one, with results: the first that is
    not is named. (Without this check, the benchmark table would be tried instead and its error would name the
    first run, whatever was wrong with another folder.) Result JSONs beside run folders are left to that table."""
    if not any(RunDir(p).is_run() for p in paths):
        return
    for p in map(Path, paths):
        run = RunDir(p)
        if not p.exists():
            raise LensError(f"{p} does not exist: `lens compare` takes run folders of `lens run` (or result JSONs)")
        if p.is_dir() and not run.is_run():
            why = ("has no manifest.json" if not run.manifest.is_file() else
                   f"was written by `lens {run.kind()}`" if run.kind() else "has an unreadable manifest.json")
            raise LensError(f"{p} is not a run folder of `lens run` ({why}): compare run folders with run folders")
        if p.is_dir() and not run.report.is_file():
            raise LensError(f"run folder {p} has no results (no report.json: the run did not finish): rerun it, "
                            f"or leave it out of `lens compare`")


def unique_labels(rows: list[RunRow]) -> None:
    """Each row's label its folder's name, with as many parent folders as make it unique (x/out, y/out)."""
    parts = {id(row): row.path.resolve().parts for row in rows}
    depth = {id(row): 1 for row in rows}
    while True:
        labels = {id(row): "/".join(parts[id(row)][-depth[id(row)]:]) for row in rows}
        clash = [row for row in rows if list(labels.values()).count(labels[id(row)]) > 1
                 and depth[id(row)] < len(parts[id(row)])]
        if not clash:
            break
        for row in clash:
            depth[id(row)] += 1
    for row in rows:
        row.label = labels[id(row)]


@dataclass
class Group:
    """Runs that compare: same model, languages and evaluation prompts."""

    key: tuple
    rows: list[RunRow] = field(default_factory=list)
    base_mismatch: list[str] = field(default_factory=list)  # runs whose "before" side differs from the first's

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def central(self) -> str:
        return self.key[1]

    @property
    def targets(self) -> list[str]:
        return [lang for lang in self.key[2] if lang != self.central]

    @property
    def base(self) -> dict[str, LanguageScores]:
        return self.rows[0].report.quick_eval.base


def group_runs(rows: list[RunRow]) -> list[Group]:
    """Rows grouped by what they were measured on, in first-seen order; labels unique across all rows."""
    unique_labels(rows)
    groups: dict[tuple, Group] = {}
    for row in rows:
        groups.setdefault(row.group, Group(row.group)).rows.append(row)
    for g in groups.values():
        first = g.rows[0].report.quick_eval
        for row in g.rows[1:]:
            q = row.report.quick_eval
            if q.base != first.base or q.retention.base_nll != first.retention.base_nll:
                g.base_mismatch.append(row.label)
    return list(groups.values())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def quality_rows(g: Group) -> list[dict]:
    """Per run (the base model first): per-language shares and central-language retention, as numbers."""
    langs = [g.central, *g.targets]
    out = [{"label": "base", "method": None, "languages": {lang: vars(g.base[lang]) for lang in langs},
            "retention_nll": g.rows[0].report.quick_eval.retention.base_nll, "nll_change": 0.0}]
    for row in g.rows:
        q = row.report.quick_eval
        out.append({"label": row.label, "method": row.report.method, "run": str(row.path), "role": row.role,
                    "languages": {lang: vars(q.enhanced[lang]) for lang in [g.central, *g.targets]},
                    "retention_nll": q.retention.enhanced_nll, "nll_change": q.retention.relative_change})
    return out


def cost_rows(g: Group, reference: str | None = None) -> list[dict]:
    """Per run, the paper's Table 5 columns (and, with reference="paper", the paper's own figures)."""
    out = []
    for row in g.rows:
        t, tr = row.report.timings_s, row.report.train
        entry = {"label": row.label, "method": row.report.method, "run": str(row.path), "role": row.role,
                 "instruction_rows": row.instruction_rows,
                 "probe_s": t.get("probe"), "train_s": t.get("train"), "total_s": t.get("total"),
                 "steps": tr.steps if tr else None, "lr": tr.lr if tr else None,
                 "trainable_share": tr.trainable_share if tr else None,
                 "host_gb": row.peak_memory.get("host_gb"), "device_gb": row.peak_memory.get("device_gb"),
                 "stages_s": {k: v for k, v in t.items() if k != "total"}}
        if reference == "paper":
            entry["paper"] = PAPER_TABLE5.get(row.report.method) if row.role == "paper" else None
        out.append(entry)
    return out


def _rows_text(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1000:.1f}K" if n >= 1000 else str(n)


def table5_markdown(g: Group, reference: str | None = None) -> list[str]:
    """The paper's Table 5 for these runs: trainable share, instruction rows, time, memory (+ the paper's row)."""
    fmt = (lambda v, f: "-" if v is None else f.format(v))  # noqa: E731
    head = ["run", "method", "trainable share", "instruction rows", "steps", "peak lr", "probe (s)", "train (s)",
            "total (s)", "peak host GB", "peak device GB"]
    if reference == "paper":
        head += ["paper: trainable", "paper: instruction data", "paper: training time (A800)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, r in zip(g.rows, cost_rows(g, reference)):
        cells = [r["label"], row.method_text, fmt(r["trainable_share"] and 100 * r["trainable_share"], "{:.2f}%"),
                 _rows_text(r["instruction_rows"]), fmt(r["steps"], "{}"), fmt(r["lr"], "{:.1e}"),
                 fmt(r["probe_s"], "{:.1f}"), fmt(r["train_s"], "{:.1f}"), fmt(r["total_s"], "{:.1f}"),
                 fmt(r["host_gb"], "{:.2f}"), fmt(r["device_gb"], "{:.2f}")]
        if reference == "paper":
            paper = r["paper"] or {}
            cells += [paper.get("trainable", "-"), paper.get("data", "-"), paper.get("time", "-")]
        lines.append("| " + " | ".join(cells) + " |")
    if reference == "paper":
        lines += ["", ("Paper: the LENS paper's Table 5 (LLaMA-3-8B-Instruct, en -> one language, one A800 GPU); "
                       "controls have no row there.")]
    return lines


def group_markdown(g: Group, reference: str | None = None) -> str:
    n = g.rows[0].report.quick_eval.samples
    lines = [f"### {g.model}: {g.central} -> {', '.join(g.targets)} ({n} held-out prompts per language)", ""]
    if g.base_mismatch:
        lines += [f"**Not comparable:** the base answers of {', '.join(g.base_mismatch)} differ from those of "
                  f"{g.rows[0].label} (another model revision, decoding or data): their rows are not like for like.", ""]
    head = ["run", "method"]
    for lang in g.targets:
        head += [f"{lang} fidelity", f"{lang} clean", f"{lang} echo", f"{lang} loop"]
    head += [f"{g.central} fidelity", f"{g.central} clean", f"{g.central} NLL (change)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, r in zip([None, *g.rows], quality_rows(g)):
        cells = [r["label"], row.method_text if row is not None else "-"]
        for lang in g.targets:
            s = r["languages"][lang]
            cells += [_pct(s["fidelity"]), _pct(s["clean_fidelity"]), _pct(s["echo"]), _pct(s["loop"])]
        c = r["languages"][g.central]
        cells += [_pct(c["fidelity"]), _pct(c["clean_fidelity"]),
                  f"{r['retention_nll']:.4f} ({100 * r['nll_change']:+.2f}%)"]
        lines.append("| " + " | ".join(cells) + " |")
    if any(row.role == "control" for row in g.rows):
        lines += ["", ("(control): not a row of the LENS paper: a comparison lensml adds (steer, xsft-top), or one of "
                       "the paper's methods run on other layers than the paper's (--train.start-layer).")]
    lines += [""] + table5_markdown(g, reference)
    bench = [row for row in g.rows if row.report.benchmarks and "enhanced" in row.report.benchmarks]
    if bench:
        docs = [bench[0].report.benchmarks["base"]] + [row.report.benchmarks["enhanced"] for row in bench]
        lines += ["", comparison_table_of(docs, ["base"] + [row.label for row in bench])]
    return "\n".join(lines)


def methods_table(groups: list[Group], reference: str | None = None) -> str:
    return "\n\n".join(group_markdown(g, reference) for g in groups)


def methods_json(groups: list[Group], reference: str | None = None) -> dict:
    return {"groups": [{"model": g.model, "central": g.central, "targets": g.targets,
                        "samples": g.rows[0].report.quick_eval.samples, "not_comparable": g.base_mismatch,
                        "quality": quality_rows(g), "cost": cost_rows(g, reference)} for g in groups],
            **({"reference": {"paper": PAPER_TABLE5}} if reference == "paper" else {})}


def plot_methods(groups: list[Group], path: Path) -> None:
    """compare.png: per group, one panel per run (titled by its folder) and the central NLL change of all."""
    plt = pyplot("methods picture")
    if plt is None:
        return
    fig = draw_methods(plt, groups)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_name(row: RunRow) -> str:
    """What a picture calls a run: its folder's name (two `lens` runs are two folders, not two "lens")."""
    return row.path.resolve().name or str(row.path)


def draw_methods(plt, groups: list[Group]):
    """Small multiples: a run per panel, its clean fidelity per target language beside the base's (grey), so a
    panel reads on its own whatever the number of runs; the last panel of a group compares retention."""
    cols = min(4, 1 + max(len(g.rows) for g in groups))
    heights = [-(-(len(g.rows) + 1) // cols) for g in groups]
    fig = plt.figure(figsize=(3.4 * cols, 3.2 * sum(heights) + 0.6 * len(groups)), layout="constrained")
    subfigs = fig.subfigures(len(groups), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, g, height in zip(subfigs, groups, heights):
        axes = sub.subplots(height, cols, squeeze=False).ravel()
        xs = range(len(g.targets))
        for k, (ax, row) in enumerate(zip(axes, g.rows)):
            q = row.report.quick_eval
            ax.bar([x - 0.2 for x in xs], [100 * g.base[t].clean_fidelity for t in g.targets], 0.4, color="0.7",
                   label="base")
            ax.bar([x + 0.2 for x in xs], [100 * q.enhanced[t].clean_fidelity for t in g.targets], 0.4,
                   color=f"C{k}", label=run_name(row))
            ax.set_xticks(list(xs), g.targets)
            ax.set_ylim(0, 100)
            ax.set_title(run_name(row), fontsize=10, fontweight="bold")
            what = row.report.method or "?"
            ax.set_xlabel("method " + what + (" (control)" if row.role == "control" else ""), fontsize=8)
            if k % cols == 0:
                ax.set_ylabel("clean fidelity (%)")
        ax_r = axes[len(g.rows)]
        names = [run_name(row) for row in g.rows]
        ax_r.barh(names, [100 * row.report.quick_eval.retention.relative_change for row in g.rows],
                  color=[f"C{i}" for i in range(len(g.rows))])
        ax_r.axvline(0, color="black", lw=0.8)
        ax_r.invert_yaxis()
        ax_r.tick_params(axis="y", labelsize=8)
        ax_r.set_xlabel(f"{g.central} answer NLL change (%)")
        ax_r.set_title(f"{g.central} retention (lower is better)", fontsize=10)
        for ax in axes[len(g.rows) + 1:]:
            ax.set_visible(False)
        sub.suptitle(f"{g.model}: clean fidelity (asked language, no echo/loop); grey: base", fontsize=10)
    return fig


def output_paths(out: str | Path) -> dict[str, Path]:
    """--out NAME.md writes NAME.md, NAME.json, NAME.png; any other --out is a folder holding compare.*."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".md" else out / "compare"
    return {kind: stem.with_suffix(f".{kind}") for kind in ("md", "json", "png")}


def compare_runs(paths: list[str | Path], out: str | Path | None = None, overwrite: bool = False,
                 reference: str | None = None) -> str:
    """The methods table of run folders; with out, also written as Markdown, JSON and a picture.

    reference="paper": the LENS paper's Table 5 row of each of its methods, beside ours.
    """
    if not paths:
        raise LensError("lens compare needs at least one run folder")
    if reference is not None and reference not in REFERENCES:
        raise LensError(f"--reference {reference}: the one reference is {', '.join(REFERENCES)}")
    groups = group_runs([load_run(p) for p in paths])
    text = methods_table(groups, reference) + "\n"
    if out is not None:
        files = output_paths(out)
        taken = [str(p) for p in files.values() if p.exists()]
        if taken and not overwrite:
            raise LensError(f"{taken[0]} already exists: pass --overwrite or choose another --out")
        files["md"].parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(files["md"], text)
        write_json_atomic(files["json"], methods_json(groups, reference))
        tmp = files["png"].with_name(f".{files['png'].name}.tmp.png")
        plot_methods(groups, tmp)
        tmp.replace(files["png"])
    return text
