"""`lens sweep`: the command line over lensml.recipes.sweep (flags in, the table and the folder out)."""

from __future__ import annotations

import argparse

from lensml.cli.args import add_config_arguments, method_sections, overrides_of
from lensml.recipes.sweep import PRESETS, SweepSpec, run_sweep
from lensml.results.sweep_plots import markdown_table


def add_sweep_command(subparsers, parents=()) -> None:
    """`lens sweep`: the base options of lens run (without benchmarks and output), the grid, --out."""
    p = subparsers.add_parser("sweep", parents=list(parents),
                              usage="lens sweep (--grid NAME=V1,V2 | --grid-file YAML | --preset layers|ablation) "
                                    "[options]",
                              help="train many settings from one probe and compare them (layer sweep, ablations)")
    g = p.add_argument_group("sweep")
    g.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a train.* option (or one of the method's own, e.g. steer.strength) over values, e.g. "
                        "train.lr=3e-4,1e-3 or train.start_layer=-1,-2,-4 "
                        "(repeatable: the cartesian product; ';' separates values that hold commas)")
    g.add_argument("--grid-file", metavar="YAML", help="YAML: option -> list of values, or a list of settings")
    g.add_argument("--preset", action="append", default=[], choices=PRESETS,
                   help="layers: train the top 1, 2, 4, ... layers; ablation (--method lens): full loss, without L1, "
                        "without the push (lambda_l = 0), without L3 (repeatable, combined with the grids)")
    g.add_argument("--out", default="runs/sweep", help="output folder (default: runs/sweep)")
    g.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace an existing --out, once the new one is complete (default: False)")
    add_config_arguments(p, ["model", "data", "probe", "train", "loss", *method_sections(), "eval"])
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    spec = SweepSpec(getattr(args, "config", None), overrides_of(args), args.grid, args.grid_file, args.preset,
                     args.out, args.overwrite)
    print(markdown_table(run_sweep(spec)))
    print(f"wrote {spec.out}")
    return 0
