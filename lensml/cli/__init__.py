"""`lens`: a thin command line over the library (lensml.recipes, lensml.evaluation, lensml.results); every print is here.

Every option of RunConfig is a flag generated from the dataclasses (lensml.cli.args);
each subcommand shows only the sections it uses.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from importlib import metadata

from lensml import __version__
from lensml.cli import chat
from lensml.cli.args import LensParser, add_config_arguments, config_from, method_sections, overrides_of, run_titles
from lensml.cli.dry_run import print_plan
from lensml.cli.eval import add_eval_commands
from lensml.cli.plot import add_plot_command
from lensml.cli.sweep import add_sweep_command
from lensml.errors import LensError
from lensml.evaluation.suite import judge_failures
from lensml.recipes.apply import apply_job
from lensml.recipes.config import read_options
from lensml.recipes.plan import plan_job
from lensml.recipes.probe import probe_job
from lensml.recipes.run import run
from lensml.recipes.train import subspace_languages, train_job


class Terminated(Exception):
    """SIGTERM, turned into an exception so that every `finally` cleans up as for Ctrl-C."""


def _on_sigterm(_signum, _frame):
    raise Terminated()


DRY_RUN_HELP = ("check the options, data, model config and output folder, print the plan and the resolved options "
                "(size defaults included), and stop: no weights load, nothing is written (default: off)")


def cmd_run(args) -> int:
    cfg = config_from(args)
    if getattr(args, "dry_run", False):
        print_plan(plan_job(cfg, "run"))
        return 0
    report = run(cfg, resume=args.resume)
    if report is None:
        return 0
    print(report.table())
    print(f"wrote {cfg.out}")
    failed = [e for side in (report.benchmarks or {}).values() for e in judge_failures(side)]
    for e in failed:
        print(f"error: the judge did not rate every answer of {e['task']}:{e['language']}: {e['judge_error']} "
              f"(answers and fidelity are in {cfg.out}/eval)", file=sys.stderr)
    return 2 if failed else 0


def cmd_probe(args) -> int:
    cfg = config_from(args)
    sub = probe_job(cfg)
    print(f"subspace: {sub.num_layers} layers, d={sub.hidden_size}, languages {','.join(sub.languages)}, "
          f"rank {sub.rank}")
    print(f"wrote {cfg.out}")
    return 0


def cmd_train(args) -> int:
    given = set(overrides_of(args)) | set(read_options(args.config) if getattr(args, "config", None) else {})
    cfg = subspace_languages(config_from(args), args.subspace, given)  # languages not given: the subspace's
    if getattr(args, "dry_run", False):
        print_plan(plan_job(cfg, "train", args.subspace))
        return 0
    report = train_job(cfg, args.subspace)
    if report is not None:
        print(report.table())
        print(f"wrote {cfg.out}")
    return 0


def cmd_apply(args) -> int:
    print(f"wrote {apply_job(args.patch, args.base, args.out, args.overwrite, args.dtype, args.device)}")
    return 0


def cmd_chat(args) -> int:
    return chat.chat(args.model, args.base, args.compare, args.prompt, args.max_new_tokens, args.steer, args.steer_lang,
                args.steer_strength)


def installed_version() -> str:
    """The installed distribution's version (what pip reports), else the package's own in a bare checkout."""
    try:
        return metadata.version("lensml")
    except metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    verbose = LensParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log debug messages (per-step losses)")
    parser = LensParser(prog="lens", parents=[verbose],
                        description="LENS: multilingual enhancement via language subspaces")
    parser.add_argument("--version", action="version", version=f"lens {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", parents=[verbose], usage="lens run [options]",
                       help="probe, evaluate, train, save and evaluate again (default: SmolLM2-135M, en -> zh)")
    add_config_arguments(p, list(run_titles()))  # every section, the registered methods' included
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.add_argument("--resume", action="store_true",
                   help="take up an interrupted run of the same options and data (kept in .OUT.partial beside "
                        "--out) after its last finished stage: subspace, base answers, base benchmarks, trained "
                        "model (default: off; an interrupted run's leftovers are replaced)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("probe", parents=[verbose], usage="lens probe [options]",
                       help="probe a model: OUT/subspace and OUT/manifest.json")
    add_config_arguments(p, ["model", "data", "probe", "output"], only={"langs", "central", "probe_data"})
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("train", parents=[verbose], usage="lens train --subspace DIR [options]",
                       help="train with a probed subspace: OUT/model (OUT/steering for steer), OUT/subspace, report and manifest")
    p.add_argument("--subspace", help="folder written by `lens probe` or `lens run` (or its subspace/ folder)")
    add_config_arguments(p, ["model", "data", "train", "loss", *method_sections(), "output"],
                         only={"langs", "central", "train_data"})
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("chat", parents=[verbose], usage="lens chat MODEL [options]",
                       help="answer prompts with a model; --compare shows the base model beside it")
    p.add_argument("model", help="a run folder (its model/), a model folder, Hub id, packaged name or .gguf file")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=False,
                   help="also answer with the base model, named in the run's manifest.json or by --base")
    p.add_argument("--base", help="base model to compare with (default: the one the run's manifest names)")
    p.add_argument("--prompt", action="append", help="prompt to answer (repeatable); default: read lines from stdin")
    p.add_argument("--max-new-tokens", type=int, default=128, help="greedy tokens per answer (default: 128)")
    p.add_argument("--steer", metavar="RUN_OR_SUBSPACE", help="answer with steering hooks (lensml.methods.steer.hooks): a `lens run "
                   "--method steer` folder, or a probe/run folder or subspace with --steer-strength; --compare then "
                   "shows the model without them (default: none)")
    p.add_argument("--steer-lang", help="steer every prompt as this language (default: read off each prompt)")
    p.add_argument("--steer-strength", type=float, help="lambda, replacing the saved one (default: the steer run's)")
    p.set_defaults(func=cmd_chat)
    p = sub.add_parser("apply", parents=[verbose], usage="lens apply PATCH --out DIR [options]",
                       help="apply a run's patch (OUT/patch) to its base model: a full checkpoint in --out")
    p.add_argument("patch", help="OUT/patch of a run (or the run folder)")
    p.add_argument("--base", help="base model (default: the one the patch names); refused if its weights differ")
    p.add_argument("--out", required=True, help="folder for the enhanced checkpoint")
    p.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace an existing --out (default: False)")
    p.add_argument("--dtype", default="auto", help="dtype to load the base in; must match the patch's (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    p.set_defaults(func=cmd_apply)
    add_eval_commands(sub, parents=[verbose])
    add_plot_command(sub, parents=[verbose])
    add_sweep_command(sub, parents=[verbose])
    return parser


def not_printed_here(record: logging.LogRecord) -> bool:
    """False for the library's "wrote OUT", which every command prints itself as its last line (once, on stdout)."""
    return not (record.msg == "wrote %s" and record.name.startswith("lensml."))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # the console's; a run's own log file keeps every line
        handler.addFilter(not_printed_here)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return args.func(args)
    except LensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the output folder was not written", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated: the output folder was not written", file=sys.stderr)
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
