"""`lens eval` and `lens compare`: thin command-line wrappers over suite and compare.

Every EvalConfig option is a flag generated from the dataclass tree, so the CLI and
the library cannot drift apart: top-level options as `--limit`, section options as
`--scoring.mode`, `--judge.base-url` (dotted section, dashes in the field name),
booleans as `--save-samples/--no-save-samples` and `--scoring.add-bos/--scoring.no-add-bos`.
The flat spellings of earlier versions (`--mode`, `--judge-base-url`, ...) still work
but are not listed.

Exit status: 0 when every task ran; 2 (one-line message) for bad input, and also when
a judge failed while judging MT-Bench: the result JSON and the answers are written
first and the message says where, so nothing generated is lost, but a script that
expects scores does not take an unjudged run for a finished one.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from lensml.errors import LensError
from lensml.models import DEFAULT_MODEL

#: EvalConfig options the command handles itself (as it did before the config tree).
_HANDLED = {"tasks"}
#: Earlier flat flag names -> dotted option; accepted, hidden from --help.
_OLD_FLAGS = {"mode": "scoring.mode", "batch_size": "scoring.batch_size", "max_length": "scoring.max_length",
              "add_bos": "scoring.add_bos", "max_new_tokens": "generation.max_new_tokens",
              "gen_batch_size": "generation.batch_size", "judge_cache": "judge.cache_dir",
              **{f"judge_{k}": f"judge.{k}" for k in ("base_url", "model", "api_key_env", "prompts", "concurrency",
                                                      "retries", "backoff_s", "timeout_s")}}


def _leaf_type(tp):
    """`int | None` -> int; the argparse type of an option."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def config_options(cls, prefix: str = ""):
    """(dotted name, type, default, field) of every leaf option of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from config_options(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", _leaf_type(hints[f.name]), default, f


def _flag(dotted: str, negate: bool = False) -> str:
    *section, leaf = dotted.split(".")
    leaf = ("no-" if negate else "") + leaf.replace("_", "-")
    return "--" + ".".join(section + [leaf])


def _add_option(p, flags: list[str], dest: str, tp, default, help_text, choices=None) -> None:
    if tp is bool:
        p.add_argument(*flags[:1], dest=dest, action="store_const", const=True, default=default, help=help_text)
        p.add_argument(*flags[1:], dest=dest, action="store_const", const=False, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS if help_text == argparse.SUPPRESS else f"turn {flags[0]} off")
    else:
        p.add_argument(*flags, dest=dest, type=tp, default=default, help=help_text, choices=choices,
                       metavar=dest.rsplit(".", 1)[-1].upper())


def add_config_flags(p, cls) -> None:
    """One flag per leaf option of cls (see the module docstring), plus the hidden old spellings."""
    for dotted, tp, default, f in config_options(cls):
        if dotted in _HANDLED:
            continue
        flags = [_flag(dotted)] + ([_flag(dotted, negate=True)] if tp is bool else [])
        shown = "" if default is None else f" (default: {default})"
        _add_option(p, flags, dotted, tp, default, f"{f.metadata.get('help', '')}{shown}", f.metadata.get("choices"))
    types = {dotted: tp for dotted, tp, *_ in config_options(cls)}
    for old, dotted in _OLD_FLAGS.items():
        if dotted in types:
            flags = [_flag(old)] + ([_flag(old, negate=True)] if types[dotted] is bool else [])
            _add_option(p, flags, dotted, types[dotted], argparse.SUPPRESS, argparse.SUPPRESS)


def build_config(cls, values: dict, prefix: str = ""):
    """cls with its nested sections from {dotted name: value}; each config validates itself on construction."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[f.name] = build_config(type(default), values, f"{prefix}{f.name}.")
        elif f"{prefix}{f.name}" in values:
            kwargs[f.name] = values[f"{prefix}{f.name}"]
    return cls(**kwargs)


def add_eval_commands(subparsers) -> None:
    from lensml.evaluation import benchmarks
    from lensml.evaluation.suite import EvalConfig

    shown = ", ".join(benchmarks.get(n).display_name for n in benchmarks.names())
    p = subparsers.add_parser("eval", help=f"benchmarks ({shown}) -> result JSON")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory, Hub id or packaged name (default: {DEFAULT_MODEL})")
    p.add_argument("--gguf", help="GGUF model file instead of --model")
    p.add_argument("--template", help="Jinja chat template file for models without one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (default: auto)")
    p.add_argument("--tasks", required=True, help=f"comma-separated name:lang[@path] of {', '.join(benchmarks.names())}, "
                                                  "e.g. xcopa:zh,mtbench:zh@data/mt-bench/zh")
    p.add_argument("--out", required=True, help="result JSON to write (answers and samples go beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is faster on a busy CPU)")
    add_config_flags(p, EvalConfig)
    p.set_defaults(func=cmd_eval)

    c = subparsers.add_parser("compare", help="Markdown table of result JSONs (paper Table 1 shape), deltas vs the first")
    c.add_argument("files", nargs="+", help="result JSONs of lens eval (or report.json of lens run)")
    c.add_argument("--out", help="also write the table to this file")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    c.set_defaults(func=cmd_compare)


def format_results(doc: dict) -> str:
    """The printout of `lens eval`: one line per result entry, worded by its benchmark."""
    from lensml.evaluation import benchmarks

    lines = [f"model: {doc['model']}   device: {doc.get('device')}"]
    for e in doc["results"]:
        benchmark = benchmarks.find(e["task"])
        line = benchmark.describe(e) if benchmark is not None else \
            f"{e['task']}:{e['language']} n={e['n']}: {e['metric']} {e['value']:.4f}"
        lines.append(f"{line} ({e['timings_s']['total']:.1f}s)")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from lensml.evaluation.suite import EvalConfig, evaluate, judge_failures
    from lensml.models import ModelConfig, load_model

    out = Path(args.out)
    if out.is_dir():
        raise LensError(f"--out {out} is a directory: give a file name such as {out / 'results.json'}")
    if out.exists() and not args.overwrite:
        raise LensError(f"output {out} already exists: pass --overwrite or choose another --out")
    values = {d: getattr(args, d) for d, *_ in config_options(EvalConfig) if d not in _HANDLED and hasattr(args, d)}
    cfg = build_config(EvalConfig, {**values, "tasks": args.tasks})  # validated before the model loads
    if args.threads is not None:
        if args.threads < 1:
            raise LensError(f"--threads must be at least 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    model, tok, name = load_model(ModelConfig(model=args.model, gguf=args.gguf, template=args.template,
                                              device=args.device, dtype=args.dtype))
    doc = evaluate(model, tok, name, cfg, out.parent, result_file=out.name, overwrite=args.overwrite)
    print(format_results(doc))
    print(f"wrote {out}")
    failed = judge_failures(doc)
    if failed:
        e = failed[0]
        raise LensError(f"the judge failed on {e['task']}:{e['language']} ({e['judge_error']}); answers saved in "
                        f"{out.parent / e['answers_file']}, results without a score in {out}: fix the judge and rerun")
    return 0


def cmd_compare(args) -> int:
    from lensml.evaluation.compare import comparison_table, write_table

    table = comparison_table(args.files)
    print(table, end="")
    if args.out:
        write_table(table, Path(args.out), args.overwrite)
        print(f"wrote {args.out}")
    return 0
