"""Pictures that read: report.png's legend off the bars, compare.png's panels by run, sweep labels apart.

Each picture is drawn, saved (the layout is final only then) and measured with matplotlib's own
renderer: window extents in pixels, as on the saved image.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from lensml.evaluation.scores import LanguageScores, QuickEval, Retention
from lensml.results import sweep_plots
from lensml.results.method_table import RunRow, draw_methods, group_runs, plot_methods
from lensml.results.plots import draw_run, plot_run, pyplot
from lensml.results.report import RunReport, TrainSummary
from lensml.results.sweep_plots import POINT_LABEL, SettingResult, SweepResult

plt = pyplot()


def scores(fidelity: float, clean: float | None = None) -> LanguageScores:
    clean = fidelity if clean is None else clean
    return LanguageScores(n=40, fidelity=fidelity, clean_fidelity=clean, echo=0.0, loop=fidelity - clean, empty=0.0,
                          degenerate=fidelity - clean)


def quick(base: dict[str, float], enhanced: dict[str, float], nll=(2.0, 2.02)) -> QuickEval:
    return QuickEval(40, {k: scores(v) for k, v in base.items()}, {k: scores(v) for k, v in enhanced.items()},
                     Retention(*nll))


def extent(artist, renderer) -> tuple[float, float, float, float]:
    b = artist.get_window_extent(renderer)
    return b.x0, b.y0, b.x1, b.y1


def intersects(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def rendered(fig):
    """The figure's renderer after a save: what the file shows."""
    fig.savefig(io.BytesIO(), format="png", dpi=110)
    return fig.canvas.get_renderer()


def test_report_png_legend_is_off_the_bars(tmp_path):
    # Every bar near the top: a method that works. A legend anywhere inside the axes would cover some.
    report = RunReport("tiny/model", "en", ["en", "zh", "sw"], TrainSummary("lens", 3, 1e-3, {"loss": 0.1}),
                       quick({"en": 0.98, "zh": 0.9, "sw": 0.85}, {"en": 1.0, "zh": 0.98, "sw": 0.95}))
    history = [{"step": s, "loss": 1 / s, "push": 0.1 / s, "pull": 0.2 / s, "lr": 1e-3} for s in (1, 2, 3)]
    fig = draw_run(plt, report, history)
    renderer = rendered(fig)
    ax = fig.axes[1]
    legend = extent(ax.get_legend(), renderer)
    bars = [extent(p, renderer) for p in ax.patches]
    assert len(bars) == 12 and all(b[3] > b[1] for b in bars)
    assert not [b for b in bars if intersects(b, legend)]
    # Nor does the loss plot's legend cover its lines, and both legends are on the page.
    lines = fig.axes[0].get_legend()
    assert not intersects(extent(lines, renderer), extent(fig.axes[0], renderer))
    page = (0, 0, fig.bbox.width, fig.bbox.height)
    for box in (legend, extent(lines, renderer)):
        assert page[0] <= box[0] and box[2] <= page[2] and page[1] <= box[1] and box[3] <= page[3]
    plt.close(fig)
    assert plot_run(report, history, tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def run_row(path: Path, method: str, enhanced: dict[str, float], nll: float) -> RunRow:
    report = RunReport("tiny/model", "en", ["en", "zh", "sw"], TrainSummary(method, 3, 1e-3, {}, 5, 10),
                       quick({"en": 0.9, "zh": 0.3, "sw": 0.2}, enhanced, (2.0, nll)))
    return RunRow(method, path, report, {"config": {}, "train_resolved": {"role": "paper"}})


def test_compare_png_panels_are_titled_by_run_folder(tmp_path):
    rows = [run_row(tmp_path / "lens-lr1e-3", "lens", {"en": 0.9, "zh": 0.8, "sw": 0.7}, 2.01),
            run_row(tmp_path / "lens-lr1e-4", "lens", {"en": 0.9, "zh": 0.5, "sw": 0.4}, 2.0),
            run_row(tmp_path / "xsft", "xsft", {"en": 0.8, "zh": 0.9, "sw": 0.85}, 2.3)]
    groups = group_runs(rows)
    fig = draw_methods(plt, groups)
    rendered(fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown[:3]] == ["lens-lr1e-3", "lens-lr1e-4", "xsft"]
    assert [ax.get_xlabel() for ax in shown[:3]] == ["method lens", "method lens", "method xsft"]
    # Each run's panel shows that run's clean fidelity beside the base's, per target language.
    heights = [round(p.get_height()) for p in shown[1].patches]
    assert heights == [30, 20, 50, 40]
    retention = shown[3]
    assert [t.get_text() for t in retention.get_yticklabels()] == ["lens-lr1e-3", "lens-lr1e-4", "xsft"]
    assert [round(p.get_width(), 1) for p in retention.patches] == [0.5, 0.0, 15.0]
    assert len(shown) == 4  # the grid's spare cells are hidden
    plt.close(fig)
    plot_methods(groups, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def sweep_with_close_points(n: int = 9) -> SweepResult:
    """One setting far off (+20% NLL) and the others within a twentieth of a percent of each other: on the
    page their points nearly coincide."""
    base = {"en": scores(0.95), "zh": scores(0.4)}
    settings = []
    for i in range(1, n + 1):
        far = i == n
        q = QuickEval(40, base, {"en": scores(0.95), "zh": scores(0.80 + 0.002 * (i % 3), 0.7 + 0.002 * (i % 4))},
                      Retention(2.0, 2.0 * (1.2 if far else 1 + 0.00005 * i)))
        settings.append(SettingResult(i, f"setting {i}", {"train.lr": 1e-3 * i}, 20, 10, quick=q))
    return SweepResult("tiny/model", "en", ["en", "zh"], base, 2.0, settings)


@pytest.mark.parametrize("n", [3, 9, 16])
def test_sweep_tradeoff_labels_do_not_overlap(tmp_path, n):
    result = sweep_with_close_points(n)
    fig = sweep_plots._tradeoff(plt, result)
    sweep_plots._save(plt, fig, tmp_path / "tradeoff.png")  # lays out, places the labels, saves, closes
    renderer = FigureCanvasAgg(fig).get_renderer()  # closing took its canvas; the layout stays
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL]
        assert sorted(t.get_text() for t in labels) == sorted(str(i) for i in range(1, n + 1))
        for t in labels:
            t.update_positions(renderer)  # at this renderer's dpi, not the save's
        boxes = [extent(super(type(t), t), renderer) for t in labels]  # the text alone, not its leader line
        clashes = [(labels[i].get_text(), labels[j].get_text())
                   for i in range(len(boxes)) for j in range(i) if intersects(boxes[i], boxes[j])]
        assert clashes == []
        frame = extent(ax, renderer)
        assert all(frame[0] <= b[0] and b[2] <= frame[2] and frame[1] <= b[1] and b[3] <= frame[3] for b in boxes)
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
