"""`lens plot WHAT RUN`: pictures of a finished run (today: `subspace`), wired in by lensml.cli."""

from __future__ import annotations

import argparse

from lensml.analysis.subspace_plot import plot_subspace
from lensml.errors import LensError
from lensml.results.rundir import RunDir


def parse_layers(text: str | None) -> list[int] | None:
    """'3,15,29' -> [3, 15, 29]; a one-line LensError for anything else."""
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise LensError(f"--layers takes comma-separated layer indices such as 3,15,29, got '{text}'") from err


def cmd_plot_subspace(args) -> int:
    doc = plot_subspace(args.run, parse_layers(args.layers), args.data, args.samples, args.overwrite,
                        device=args.device, dtype=args.dtype)
    best = max(doc["separation"]["enhanced"], key=lambda e: e["language_share"] or 0.0)
    print(f"{doc['samples']} prompts per language ({','.join(doc['languages'])}), {doc['num_layers']} layers; "
          f"PCA at layers {','.join(str(e['layer']) for e in doc['pca'])}; enhanced model's languages most "
          f"separated at layer {best['layer']} (share {best['language_share']:.3f})")
    print(f"wrote {RunDir(args.run).analysis}")
    return 0


def add_plot_command(subparsers, parents=()) -> None:
    """Add `lens plot subspace RUN [options]` to the `lens` command's subparsers."""
    p = subparsers.add_parser("plot", parents=list(parents), usage="lens plot WHAT RUN [options]",
                              help="pictures of a finished run (subspace: languages per layer, base vs enhanced)")
    kinds = p.add_subparsers(dest="plot", required=True, metavar="WHAT")
    s = kinds.add_parser("subspace", parents=list(parents), prog="lens plot subspace",
                         usage="lens plot subspace RUN [options]",
                         help="PCA of the held-out prompts' states at a few layers and language separation per "
                              "layer, base beside enhanced: RUN/analysis/")
    s.add_argument("run", help="folder written by `lens run` or `lens train` (needs manifest.json and model/)")
    s.add_argument("--layers", help="comma-separated layers for the PCA panels, e.g. 3,15,29; -1 is the top, "
                                    "written --layers=-1,3 (default: one low, the middle, the top)")
    s.add_argument("--data", help="held-out prompts, any --eval.data source (default: the run's eval data)")
    s.add_argument("--samples", type=int, help="prompts per language (default: the run's eval samples)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    s.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 (default: auto)")
    s.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace earlier outputs in RUN/analysis (default: False)")
    s.set_defaults(func=cmd_plot_subspace)
