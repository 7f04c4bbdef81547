"""What a sweep reports: its result types, sweep.json / .csv / .md, and the pictures.

Why separate from the recipe: the tables and pictures read only a SweepResult, so they
can be redrawn or changed without touching the training loop. Pictures: the quick
evaluation's metrics against the number of trained layers (paper Fig. 3), the loss
ablation as bars (Fig. 4), and the trade-off each setting makes between the target
languages' fidelity and the central language's answer NLL.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lensml.evaluation.scores import METRICS, LanguageScores, QuickEval
from lensml.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from lensml.results.plots import pyplot

log = logging.getLogger(__name__)
FORMAT = {"format": "lensml-sweep", "version": 1}


@dataclass
class SettingResult:
    """One trained setting: what it set, whether it trained, and the quick evaluation of the result."""

    index: int
    label: str
    overrides: dict
    start_layer: int            # resolved, 0-based
    trained_layers: int
    status: str = "ok"          # ok | failed
    error: str | None = None
    steps: int = 0
    lr: float | None = None
    final: dict = field(default_factory=dict)
    train_s: float = 0.0
    quick: QuickEval | None = None
    labels: dict = field(default_factory=dict)   # per axis of the grid (option or preset name)

    @property
    def nll_change(self) -> float | None:
        return self.quick.retention.relative_change if self.quick else None

    def summary(self, central: str) -> str:
        """The line logged when the setting is done."""
        scores = [f"{lang} fidelity {_pct(s.fidelity)}, clean {_pct(s.clean_fidelity)}"
                  for lang, s in self.quick.enhanced.items() if lang != central]
        return "; ".join(scores + [f"{central} NLL {_pct(self.nll_change, signed=True)}",
                                   f"{self.steps} steps in {self.train_s:.1f}s"])


@dataclass
class SweepResult:
    model: str
    central: str
    languages: list[str]         # central first
    base: dict[str, LanguageScores]
    base_nll: float
    settings: list[SettingResult]
    presets: list[str] = field(default_factory=list)
    base_config: dict = field(default_factory=dict)
    answers: list[dict] = field(default_factory=list)   # one audit row per prompt and setting
    timings_s: dict = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return [lang for lang in self.languages if lang != self.central]

    @property
    def ok(self) -> list[SettingResult]:
        return [s for s in self.settings if s.status == "ok"]

    def to_dict(self) -> dict:
        settings = []
        for s in self.settings:
            doc = {k: v for k, v in dataclasses.asdict(s).items() if k != "quick"}
            doc["train_s"] = round(s.train_s, 3)
            doc["metrics"] = None if s.quick is None else {
                lang: {"base": dataclasses.asdict(s.quick.base[lang]), "enhanced": dataclasses.asdict(s.quick.enhanced[lang])}
                for lang in self.languages}
            doc["central_nll"] = None if s.quick is None else {
                "base": s.quick.retention.base_nll, "enhanced": s.quick.retention.enhanced_nll, "relative_change": s.nll_change}
            settings.append(doc)
        return {**FORMAT, "model": self.model, "central": self.central, "languages": self.languages,
                "presets": self.presets, "base": {lang: dataclasses.asdict(v) for lang, v in self.base.items()},
                "base_nll": self.base_nll, "settings": settings, "base_config": self.base_config,
                "timings_s": self.timings_s}


def _pct(x, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.2f}%" if signed else f"{100 * x:.1f}%"


def markdown_table(result: SweepResult) -> str:
    """One row per setting (and the base model first): the README's sweep table."""
    c = result.central
    head = ["#", "setting"] + [h for t in result.targets for h in (f"{t} fidelity", f"{t} clean", f"{t} echo / loop")]
    head += [f"{c} fidelity", f"{c} NLL change", "steps", "train s", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def scores(s: dict[str, LanguageScores]) -> list[str]:
        return [v for t in result.targets for v in (_pct(s[t].fidelity), _pct(s[t].clean_fidelity),
                                                     f"{_pct(s[t].echo)} / {_pct(s[t].loop)}")] + [_pct(s[c].fidelity)]

    lines.append("| 0 | base | " + " | ".join(scores(result.base) + ["-", "-", "-", "-"]) + " |")
    for s in result.settings:
        cells = scores(s.quick.enhanced) if s.quick else ["-"] * (3 * len(result.targets) + 1)
        status = "ok" if s.status == "ok" else f"failed: {s.error}"
        cells += [_pct(s.nll_change, signed=True), str(s.steps), f"{s.train_s:.1f}", status.replace("|", "/")]
        lines.append(f"| {s.index} | {s.label.replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(result: SweepResult) -> str:
    """One row per setting: its options as columns, then per language and side every quick-evaluation metric."""
    names = sorted({k for s in result.settings for k in s.overrides})
    metric_cols = [f"{lang}.{m}.{side}" for lang in result.languages for side in ("base", "enhanced") for m in METRICS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "status", "error", *names, "trained_layers", "steps", "train_s", "lr",
                f"{result.central}.nll_change", *metric_cols])
    for s in result.settings:
        options = [json.dumps(s.overrides[n]) if isinstance(s.overrides.get(n), dict) else s.overrides.get(n, "")
                   for n in names]
        metrics = [getattr(getattr(s.quick, side)[lang], m) if s.quick else ""
                   for lang in result.languages for side in ("base", "enhanced") for m in METRICS]
        w.writerow([s.index, s.label, s.status, s.error or "", *options, s.trained_layers, s.steps,
                    round(s.train_s, 3), s.lr if s.lr is not None else "",
                    s.nll_change if s.nll_change is not None else "", *metrics])
    return buf.getvalue()


def write_outputs(result: SweepResult, directory: Path) -> list[Path]:
    """sweep.json, sweep.csv, sweep.md, answers.jsonl and the pictures that apply; returns the pictures."""
    write_json_atomic(directory / "sweep.json", result.to_dict())
    write_text_atomic(directory / "sweep.csv", csv_text(result))
    write_text_atomic(directory / "sweep.md", markdown_table(result) + "\n")
    if result.answers:
        write_jsonl_atomic(directory / "answers.jsonl", result.answers)
    return plot_sweep(result, directory)


# --- pictures -------------------------------------------------------------------------------

def plot_sweep(result: SweepResult, directory: Path) -> list[Path]:
    """layers.png when the start layer varies, ablation.png for the ablation preset, tradeoff.png always."""
    plt = pyplot("sweep pictures")
    if plt is None or not result.ok:
        return []
    written = []
    if len({s.trained_layers for s in result.ok}) > 1:
        written.append(_save(plt, _layers(plt, result), directory / "layers.png"))
    if "ablation" in result.presets:
        written.append(_save(plt, _ablation(plt, result), directory / "ablation.png"))
    written.append(_save(plt, _tradeoff(plt, result), directory / "tradeoff.png"))
    return written


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    place_labels(fig)  # after the layout: where the points end up on the page decides what collides
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _layers(plt, result: SweepResult):
    """Per group of the other options: fidelity and clean fidelity of each target, and the NLL change,
    against the number of top layers trained."""
    groups: dict[str, list[SettingResult]] = {}
    for s in result.ok:
        other = [label for axis, label in s.labels.items() if axis not in ("train.start_layer", "layers")]
        groups.setdefault(", ".join(other), []).append(s)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, metric, ax in (("fidelity", "fidelity", axes[0]), ("clean_fidelity", "clean fidelity", axes[1])):
        for lang in result.targets:
            for g, (name, members) in enumerate(groups.items()):
                members = sorted(members, key=lambda s: s.trained_layers)
                ax.plot([s.trained_layers for s in members], [100 * getattr(s.quick.enhanced[lang], key) for s in members],
                        marker="o", label=f"{lang} {name}".strip())
            ax.axhline(100 * getattr(result.base[lang], key), linestyle="--", color="grey", linewidth=1)
        ax.set(xscale="log", xlabel="top layers trained", ylabel=f"% {metric}", title=f"{metric} (dashed: base)",
               ylim=(0, 105))
        ax.legend(fontsize=7)
    ax = axes[2]
    for name, members in groups.items():
        members = sorted(members, key=lambda s: s.trained_layers)
        ax.plot([s.trained_layers for s in members], [100 * s.nll_change for s in members], marker="o", label=name or None)
    ax.axhline(0, linestyle="--", color="grey", linewidth=1)
    ax.set(xscale="log", xlabel="top layers trained", ylabel="% change", title=f"{result.central} answer NLL change")
    if len(groups) > 1:
        ax.legend(fontsize=7)
    for ax in axes:
        ticks = sorted({s.trained_layers for s in result.ok})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    fig.suptitle(f"{result.model}: layers trained")
    return fig


def _ablation(plt, result: SweepResult):
    """Bars per setting: each target's fidelity and clean fidelity (base: dashed), the NLL change below."""
    names = [s.label for s in result.ok]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 1.2 * len(names)), 7), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    bars = [(lang, key) for lang in result.targets for key in ("fidelity", "clean_fidelity")]
    width = 0.8 / len(bars)
    for k, (lang, key) in enumerate(bars):
        xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(names))]
        drawn = ax.bar(xs, [100 * getattr(s.quick.enhanced[lang], key) for s in result.ok], width,
                       label=f"{lang} {key.replace('_', ' ')}", alpha=1.0 if key == "fidelity" else 0.6)
        ax.axhline(100 * getattr(result.base[lang], key), linestyle="--", linewidth=1, color=drawn.patches[0].get_facecolor())
    ax.set(ylim=(0, 105), ylabel="% of held-out answers", title="Ablation: answers in the prompt's language (dashed: base)")
    ax.legend(fontsize=7, loc="lower right")
    ax2.bar(range(len(names)), [100 * s.nll_change for s in result.ok], color="tab:red")
    ax2.axhline(0, color="grey", linewidth=1)
    ax2.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax2.set(ylabel="% change", title=f"{result.central} answer NLL change")
    fig.suptitle(result.model)
    return fig


def _tradeoff(plt, result: SweepResult):
    """Each setting as a point: target fidelity (and clean fidelity) against the central NLL change."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "fidelity", "fidelity"), (axes[1], "clean_fidelity", "clean fidelity")):
        for lang in result.targets:
            xs = [100 * s.nll_change for s in result.ok]
            ys = [100 * getattr(s.quick.enhanced[lang], key) for s in result.ok]
            points = ax.scatter(xs, ys, label=lang)
            ax.scatter([0], [100 * getattr(result.base[lang], key)], marker="*", s=160,
                       color=points.get_facecolor()[0], edgecolor="black", label=f"{lang} base")
            for s, x, y in zip(result.ok, xs, ys):
                label_point(ax, str(s.index), (x, y))
        ax.axvline(0, linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel=f"{result.central} answer NLL change (%)", ylabel=f"% {title}", title=f"target {title}")
        ax.legend(fontsize=7)
    fig.suptitle(f"{result.model}: what each setting trades (numbers: settings in sweep.md)")
    return fig


# --- labels beside points, apart from each other ----------------------------------------------

#: The gid of the annotations place_labels moves (label_point makes them).
POINT_LABEL = "lensml-point-label"
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in window pixels
#: Where a label may go, in points from its point: rings of eight directions, nearest first, upper right first.
OFFSETS = [(round(r * dx), round(r * dy)) for r in (5, 10, 16, 24, 34, 46)
           for dx, dy in ((0.8, 0.6), (-0.8, 0.6), (0.8, -0.6), (-0.8, -0.6), (1, 0), (-1, 0), (0, 1), (0, -1))]


def label_point(ax, text: str, xy: tuple[float, float]) -> None:
    """A small label for the point at xy (data coordinates); place_labels finds it a free spot later."""
    ann = ax.annotate(text, xy, textcoords="offset points", xytext=OFFSETS[0], fontsize=7, va="bottom",
                      arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5, "shrinkA": 0, "shrinkB": 2})
    ann.set_gid(POINT_LABEL)


def place_labels(fig) -> None:
    """Greedy placement: each label, in order, takes the nearest offset (OFFSETS) where its box overlaps no
    label placed before, no marker, not the legend, and stays inside the axes; with none free, the least
    overlapping one.

    Sweeps put settings with near-equal scores next to each other, and numbers at one fixed offset from
    their points then print over one another and cannot be read.
    """
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL]
        if not labels:
            continue
        window = ax.get_window_extent(renderer)
        frame = (window.x0, window.y0, window.x1, window.y1)
        taken = _marker_boxes(ax, fig.dpi)
        legend = ax.get_legend()
        if legend is not None:
            box = legend.get_window_extent(renderer)
            taken.append((box.x0, box.y0, box.x1, box.y1))
        for ann in labels:
            best, best_cost = OFFSETS[0], None
            for offset in OFFSETS:
                box = _label_box(ann, offset, renderer)
                cost = sum(_overlap(box, other) for other in taken) + _outside(box, frame)
                if best_cost is None or cost < best_cost:
                    best, best_cost = offset, cost
                if cost == 0:
                    break
            x0, y0, x1, y1 = _label_box(ann, best, renderer)
            taken.append((x0 - 1, y0 - 1, x1 + 1, y1 + 1))


def _label_box(ann, offset: tuple[int, int], renderer) -> Box:
    ann.xyann = offset
    ann.set_horizontalalignment("left" if offset[0] > 0 else "right" if offset[0] < 0 else "center")
    ann.set_verticalalignment("bottom" if offset[1] > 0 else "top" if offset[1] < 0 else "center")
    return _text_box(ann, renderer)


def _text_box(ann, renderer) -> Box:
    """The box of the label's text alone (an Annotation's own extent includes its leader line)."""
    ann.update_positions(renderer)
    box = super(type(ann), ann).get_window_extent(renderer)
    return box.x0, box.y0, box.x1, box.y1


def _marker_boxes(ax, dpi: float) -> list[Box]:
    boxes = []
    for coll in ax.collections:
        sizes = coll.get_sizes()
        for i, (x, y) in enumerate(ax.transData.transform(coll.get_offsets())):
            r = (sizes[i % len(sizes)] if len(sizes) else 36.0) ** 0.5 / 2 * dpi / 72
            boxes.append((x - r, y - r, x + r, y + r))
    return boxes


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: Box, frame: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1]) - _overlap(box, frame)
