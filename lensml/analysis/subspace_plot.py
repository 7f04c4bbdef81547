"""`lens plot subspace RUN`: the LENS paper's Fig. 6 for any run, and the numbers behind it.

Writes into RUN/analysis/:

- subspace_pca.png: per chosen layer, the held-out prompts' last-token states of the base model
  beside those of the enhanced one, projected on 2 principal axes fitted to both together (so
  the two panels share axes), coloured by language;
- separation.png: per layer, the share of the states' variance that language identity explains
  (and the Fisher-style ratio), base and enhanced (lensml.analysis.separation says why this measure);
- subspace.json: those numbers per layer and side, and the PCA coordinates, to re-plot without a model.

Each file is written atomically, the JSON last; existing outputs are kept unless overwrite.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from lensml.analysis.separation import chance_share, pca_2d, resolve_layers, separation
from lensml.analysis.states import held_out_prompts, model_states, read_run
from lensml.errors import LensError
from lensml.io import TMP_MARK, check_writable, finite, write_json_atomic
from lensml.results.plots import pyplot

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
OUTPUTS = ("subspace_pca.png", "separation.png", "subspace.json")
SIDES = ("base", "enhanced")


def check_outputs(folder: Path, overwrite: bool) -> None:
    """Refuse to replace earlier outputs unless asked; fail now if the folder cannot be written."""
    if folder.exists() and not folder.is_dir():
        raise LensError(f"{folder} is a file, not a folder: remove it")
    existing = [name for name in OUTPUTS if (folder / name).exists()]
    if existing and not overwrite:
        raise LensError(f"{folder} already holds {', '.join(existing)}: pass --overwrite to replace them")
    check_writable(folder)


def analyse(states: dict[str, object], labels: list[str], layers: list[int]) -> dict:
    """The JSON content from states {side: (n_layers, N, d)}: separation per layer and side, PCA at layers."""
    measures = {side: separation(x, labels) for side, x in states.items()}
    num_layers = len(next(iter(measures.values()))["language_share"])
    doc = {"num_layers": num_layers, "chance_language_share": chance_share(labels),
           "separation": {side: [{"layer": i, **{k: float(v[i]) for k, v in m.items()}} for i in range(num_layers)]
                          for side, m in measures.items()},
           "labels": list(labels), "pca": []}
    for layer in layers:
        coords, explained = pca_2d({side: x[layer] for side, x in states.items()})
        doc["pca"].append({"layer": layer, "explained_variance": explained.tolist(),
                           "points": {side: c.tolist() for side, c in coords.items()}})
    return doc


def save_png(fig, path: Path) -> None:
    """Save a figure under a temporary name in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}{os.getpid()}-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plot_pca(doc: dict, languages: list[str], path: Path, title: str = "") -> None:
    """One row per layer, base | enhanced, points coloured by language (central language as crosses)."""
    plt = pyplot("subspace pictures")
    rows = doc["pca"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 3.6 * len(rows)), squeeze=False)
    labels = np.asarray(doc["labels"])
    colours = plt.get_cmap("tab10")
    for r, entry in enumerate(rows):
        for c, side in enumerate(SIDES):
            ax = axes[r][c]
            points = np.asarray(entry["points"][side])
            for k, lang in enumerate(languages):
                sel = labels == lang
                ax.scatter(points[sel, 0], points[sel, 1], s=14, alpha=0.75, color=colours(k % 10),
                           marker="x" if k == 0 else "o", label=lang)
            pc1, pc2 = (100 * v for v in entry["explained_variance"])
            ax.set_title(f"layer {entry['layer']}, {side}")
            ax.set_xlabel(f"PC1 ({pc1:.0f}% of variance)")
            ax.set_ylabel(f"PC2 ({pc2:.0f}%)")
            ax.locator_params(nbins=5)
            ax.ticklabel_format(style="sci", scilimits=(-2, 3))
        lo = np.min([axes[r][c].get_xlim()[0] for c in range(2)]), np.min([axes[r][c].get_ylim()[0] for c in range(2)])
        hi = np.max([axes[r][c].get_xlim()[1] for c in range(2)]), np.max([axes[r][c].get_ylim()[1] for c in range(2)])
        for c in range(2):
            axes[r][c].set_xlim(lo[0], hi[0])
            axes[r][c].set_ylim(lo[1], hi[1])
    axes[0][1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\nlast-token states of held-out prompts, PCA fitted on base + enhanced per layer", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def plot_separation(doc: dict, path: Path, title: str = "") -> None:
    """Language share of variance (with its chance level) and the Fisher-style ratio, per layer and side."""
    plt = pyplot("subspace pictures")
    from matplotlib.ticker import LogFormatter, MaxNLocator

    class Plain(LogFormatter):  # matplotlib's choice of which log ticks to label, written as 20, not 2x10^1
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for side, style in zip(SIDES, ("--", "-")):
        entries = doc["separation"][side]
        xs = [e["layer"] for e in entries]
        for ax, key in zip(axes, ("language_share", "fisher_ratio")):
            ys = [np.nan if e[key] is None else e[key] for e in entries]
            ax.plot(xs, ys, style, marker="o", markersize=3, label=side)
    axes[0].axhline(doc["chance_language_share"], color="grey", linewidth=0.8, linestyle=":", label="chance")
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("share of variance explained by language")
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(Plain(labelOnlyBase=False))
    axes[1].yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axes[1].set_ylabel("between / within-language variance (F)")
    for ax in axes:
        ax.set_xlabel("layer (last: after the final norm)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}\nhow separated the languages are, per layer", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def plot_subspace(run_dir, layers: list[int] | None = None, data: str | None = None, samples: int | None = None,
                  overwrite: bool = False, device: str = "auto", dtype: str = "auto") -> dict:
    """Compute, plot and write RUN/analysis/{subspace_pca.png, separation.png, subspace.json}; return the JSON.

    layers: PCA panels (default one low, the middle, the top; negatives count from the top);
    data, samples: held-out prompts other than those the run evaluated on.
    """
    run = read_run(run_dir)
    out = run.rundir.analysis
    check_outputs(out, overwrite)
    known = run.num_layers()
    if known is not None:
        resolve_layers(layers, known)  # a bad --layers fails before any model loads
    prompts, source = held_out_prompts(run, data, samples)
    states, labels = model_states(run, prompts, device, dtype)
    num_layers = states["base"].shape[0]
    chosen = resolve_layers(layers, num_layers)
    log.info("separation at %d layers, PCA at layers %s, %d prompts per language", num_layers,
             ",".join(map(str, chosen)), len(next(iter(prompts.values()))))
    doc = {"schema_version": SCHEMA_VERSION, "run": str(run.path), "base_model": run.base_model,
           "enhanced_model": str(run.model_dir), "languages": run.languages, "data": source,
           "samples": len(next(iter(prompts.values()))),
           "layer_index": "i: output of decoder layer i (0-based); the last entry is after the final norm",
           "measure": "language_share = SS_between / SS_total of the states by language (chance: "
                      "chance_language_share); fisher_ratio = (SS_between / (L-1)) / (SS_within / (N-L))",
           **analyse(states, labels, chosen)}
    doc = finite(doc)  # NaN (an undefined measure) is null, in the file and in what is returned alike
    out.mkdir(parents=True, exist_ok=True)
    title = f"{run.base_model} -> {run.path.name}"
    plot_pca(doc, run.languages, out / "subspace_pca.png", title)
    plot_separation(doc, out / "separation.png", title)
    write_json_atomic(out / "subspace.json", doc)
    log.info("wrote %s", out)
    return doc
