"""One picture per run: the loss terms over training and fidelity before/after."""

from __future__ import annotations

import logging
from pathlib import Path

from lensml.results.report import RunReport

log = logging.getLogger(__name__)


def pyplot(what: str = "pictures"):
    """matplotlib's pyplot on the Agg backend (files, no window), or None (logged) when it cannot be imported.

    Imported when a picture is drawn, not with lensml: `import lensml` and the runs that draw nothing
    never load matplotlib or touch a notebook's backend.
    """
    try:
        import matplotlib  # lazy on purpose, see above
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no %s (pip install matplotlib)", what)
        return None
    return plt


def plot_run(report: RunReport, history: list[dict], path: Path) -> bool:
    """Write OUT/report.png; returns False (and logs why) when matplotlib is missing."""
    plt = pyplot("report.png")
    if plt is None:
        return False
    fig = draw_run(plt, report, history)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def draw_run(plt, report: RunReport, history: list[dict]):
    """The figure of report.png. Legends sit outside their axes: four bars per language reach the top when
    a method works, and a legend inside would hide them."""
    quick = report.quick_eval
    has_eval = quick is not None
    fig, axes = plt.subplots(1, 2 if has_eval else 1, figsize=(12 if has_eval else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    steps = [h["step"] for h in history]
    terms = [k for k in (history[0] if history else {}) if k not in ("step", "lr")]
    for term in terms:
        ax.plot(steps, [h[term] for h in history], label=term, linewidth=2 if term == "loss" else 1)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title(f"loss terms ({report.method or 'training'})")
    if terms:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=min(4, len(terms)),
                  frameon=False)
    else:  # a method without training steps (steering)
        ax.text(0.5, 0.5, "no training steps", ha="center", va="center", transform=ax.transAxes)
    if has_eval:
        ax = axes[0][1]
        langs = report.languages
        width = 0.2
        for k, (key, side) in enumerate([("fidelity", "base"), ("fidelity", "enhanced"),
                                         ("clean_fidelity", "base"), ("clean_fidelity", "enhanced")]):
            xs = [i + (k - 1.5) * width for i in range(len(langs))]
            values = quick.metric(key, side)
            ax.bar(xs, [100 * values[lang] for lang in langs], width,
                   label=f"{key.replace('_', ' ')} {side}", alpha=0.55 if side == "base" else 1.0)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_ylim(0, 105)
        ax.set_ylabel("% of held-out answers")
        ax.set_title("Answers in the prompt's language")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.suptitle(report.model)
    fig.tight_layout()
    return fig
