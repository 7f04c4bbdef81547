"""`lens eval` and `lens compare`: thin command-line wrappers over suite and compare.

Every EvalConfig option is a flag generated from the dataclass tree, so the CLI and
the library cannot drift apart: top-level options as `--limit`, section options as
`--scoring.mode`, `--judge.base-url` (dotted section, dashes in the field name),
booleans as `--save-samples/--no-save-samples` and `--scoring.add-bos/--scoring.no-add-bos`.
The flat spellings of earlier versions (`--mode`, `--judge-base-url`, ...) still work
but are not listed.

--steer RUN_OR_SUBSPACE evaluates the model with steering hooks on (lensml.methods.steer.hooks). The hooks add
lambda * delta_l at the last real position of every forward: under generation (MT-Bench) that is
the prompt's last token and every generated token, i.e. the steered model's answers; in letter
mode it is the generation point whose next-token logits are read, so the score is the steered
model's. In loglik mode it would be the prediction of each continuation's LAST token only (the
other continuation tokens are scored at earlier, unsteered positions), which is not a steered
model's likelihood, so --steer with a multiple-choice task in loglik mode is refused.

Exit status: 0 when every task ran; 2 (one-line message) for bad input, and also when
a judge failed while judging MT-Bench: the result JSON and the answers are written
first and the message says where, so nothing generated is lost, but a script that
expects scores does not take an unjudged run for a finished one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lensml.cli.args import add_config_arguments, overrides_of
from lensml.errors import LensError
from lensml.evaluation import benchmarks, tasks
from lensml.evaluation.lm_eval_format import result_entries
from lensml.evaluation.suite import EvalConfig, check_result_free, default_result_path, evaluate, judge_failures
from lensml.methods.steer.hooks import Steering
from lensml.recipes.config import load_config
from lensml.results.benchmark_results import comparison_table
from lensml.results.benchmark_table import write_table
from lensml.results.method_table import REFERENCES, check_compared, compare_runs, output_paths
from lensml.results.rundir import RunDir
from lensml.runtime.models import ModelConfig, load_model

#: Earlier flat flag names -> dotted option; accepted, hidden from --help.
_OLD_FLAGS = {"mode": "scoring.mode", "batch_size": "scoring.batch_size", "max_length": "scoring.max_length",
              "add_bos": "scoring.add_bos", "max_new_tokens": "generation.max_new_tokens",
              "gen_batch_size": "generation.batch_size", "judge_cache": "judge.cache_dir",
              **{f"judge_{k}": f"judge.{k}" for k in ("base_url", "model", "api_key_env", "prompts", "concurrency",
                                                      "retries", "backoff_s", "timeout_s")}}
_EVAL_SECTIONS = {"model": "model", "options": "evaluation", "scoring": "scoring (multiple choice)",
                  "generation": "generation (MT-Bench answers)", "judge": "judge (MT-Bench scores)"}


def _eval_section(dotted: str, _field) -> str:
    return dotted.split(".")[0] if "." in dotted else "options"


def add_eval_commands(subparsers, parents=()) -> None:
    shown = ", ".join(benchmarks.get(n).display_name for n in benchmarks.names())
    p = subparsers.add_parser("eval", parents=list(parents), usage="lens eval --tasks TASKS [--out FILE] [options]",
                              help=f"benchmarks ({shown}) -> result JSON")
    p.add_argument("--out", help="result JSON to write (answers and samples go beside it) (default: "
                                 "eval/MODEL/results_TIME.json, as lm-eval's --output_path lays it out)")
    p.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace an existing --out (default: False)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is faster on a busy CPU)")
    p.add_argument("--steer", metavar="RUN_OR_SUBSPACE",
                   help="evaluate with steering hooks: a `lens run --method steer` folder, or a probe/run folder or "
                        "subspace with --steer-strength; generation tasks and --scoring.mode letter only (loglik would "
                        "steer just each continuation's last token) (default: none)")
    p.add_argument("--steer-lang", help="steer every prompt as this language (default: read off each prompt)")
    p.add_argument("--steer-strength", type=float, help="lambda, replacing the saved one (default: the steer run's)")
    add_config_arguments(p, ["model"], cls=ModelConfig, tag="model", prefix="model.", titles=_EVAL_SECTIONS,
                         config_file=False)
    add_config_arguments(p, ["options", "scoring", "generation", "judge"], cls=EvalConfig, tag="eval",
                         titles=_EVAL_SECTIONS, sectioner=_eval_section, hidden=_OLD_FLAGS, config_file=False)
    p.set_defaults(func=cmd_eval)

    c = subparsers.add_parser("compare", parents=list(parents), usage="lens compare RESULT_OR_RUN ... [options]",
                              help="Markdown table of results and runs (paper Table 1 shape), deltas vs the first")
    c.add_argument("files", nargs="+", help="run folders of lens run (one row per method, plus the base model: "
                                            "quality per language, English retention, benchmarks, cost), or "
                                            "result JSONs of lens eval (benchmark table)")
    c.add_argument("--out", help="also write the table: for run folders NAME.md (+ NAME.json, NAME.png) or a "
                                 "folder (compare.md/.json/.png); for result JSONs this file")
    c.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace an existing --out (default: False)")
    c.add_argument("--reference", metavar="|".join(REFERENCES),
                   help="run folders only: print a published table beside ours; paper: the LENS paper's Table 5 "
                        "(trainable share, instruction data, training time) for each of its methods (default: none)")
    c.set_defaults(func=cmd_compare)


def format_results(doc: dict) -> str:
    """The printout of `lens eval`: one line per result entry, worded by its benchmark."""
    lines = [f"model: {doc['model']}   device: {doc.get('device')}"]
    for e in result_entries(doc) or []:
        benchmark = benchmarks.find(e["task"])
        line = benchmark.describe(e) if benchmark is not None else \
            f"{e['task']}:{e['language']} n={e['n']}: {e['metric']} {e['value']:.4f}"
        lines.append(f"{line} ({e['timings_s']['total']:.1f}s)")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    model_cfg = load_config(None, overrides_of(args, "model"), ModelConfig)
    out = Path(args.out) if args.out else default_result_path(model_cfg.gguf or model_cfg.model)
    if out.is_dir():
        raise LensError(f"--out {out} is a directory: give a file name such as {out / 'results.json'}")
    check_result_free(out, args.overwrite)  # before the model loads
    cfg = load_config(None, overrides_of(args, "eval"), EvalConfig)  # validated (tasks and data) before the model loads
    steering = _steering(args, cfg)  # checked before the model loads
    if args.threads is not None:
        if args.threads < 1:
            raise LensError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    model, tok, name = load_model(model_cfg)
    if steering is not None:
        steering.attach(model, name)  # left on: the process ends with the evaluation
        name = f"{name} + steer({args.steer}, lambda={steering.cfg.strength:g}, lang={steering.cfg.lang or 'read off'})"
    doc = evaluate(model, tok, name, cfg, out.parent, result_file=out.name, overwrite=args.overwrite)
    print(format_results(doc))
    print(f"wrote {out}")
    failed = judge_failures(doc)
    if failed:
        e = failed[0]
        scored = (f"results in {out} score {e['n_rated']} of {e['n_rated'] + e['n_unrated'] + e['n_failed']} turns"
                  if e.get("judged") else f"results without a score in {out}")
        more = f" (and {len(failed) - 1} more tasks)" if len(failed) > 1 else ""
        raise LensError(f"the judge failed on {e['task']}:{e['language']}{more} ({e['judge_error']}); answers saved in "
                        f"{out.parent / e['answers_file']}, {scored}: fix the judge and rerun (ratings given are cached)")
    return 0


def _steering(args, cfg):
    """The Steering of --steer (None without it); refused where its effect on the score is not meaningful."""
    steer, lang = getattr(args, "steer", None), getattr(args, "steer_lang", None)
    strength = getattr(args, "steer_strength", None)
    if steer is None:
        if lang is not None or strength is not None:
            raise LensError("--steer-lang and --steer-strength need --steer RUN_OR_SUBSPACE")
        return None

    tasks.check_steerable(cfg)
    return Steering.from_pretrained(steer, strength=strength, lang=lang)


def cmd_compare(args) -> int:
    reference = getattr(args, "reference", None)
    check_compared(args.files)  # a folder without results is named, whichever place it has
    if all(RunDir(f).is_run() for f in args.files):  # runs of `lens run`: the methods table (Tables 1 and 5)
        print(compare_runs(args.files, args.out, args.overwrite, reference), end="")
        if args.out:
            print("wrote " + ", ".join(str(p) for p in output_paths(args.out).values()))
        return 0
    if reference is not None:
        raise LensError("--reference compares run folders of `lens run` with the paper: give run folders, not "
                        "result JSONs")
    table = comparison_table(args.files)
    print(table, end="")
    if args.out:
        write_table(table, Path(args.out), args.overwrite)
        print(f"wrote {args.out}")
    return 0
