"""`lens eval` and `lens compare`: thin command-line wrappers over suite and compare.

Every EvalConfig option is a flag (`--limit`, `--judge-base-url`, ...), generated
from the dataclass so the CLI and the library cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lensml.errors import LensError
from lensml.models import DEFAULT_MODEL

_HANDLED = {"result_file", "overwrite"}


def _eval_config_fields():
    from lensml.evaluation.suite import EvalConfig
    return [f for f in dataclasses.fields(EvalConfig) if f.name not in _HANDLED]


def add_eval_commands(subparsers) -> None:
    p = subparsers.add_parser("eval", help="benchmarks (XCOPA, XWinograd, XStoryCloze, M-MMLU, MT-Bench) -> result JSON")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory, Hub id or packaged name (default: {DEFAULT_MODEL})")
    p.add_argument("--gguf", help="GGUF model file instead of --model")
    p.add_argument("--template", help="Jinja chat template file for models without one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (default: auto)")
    p.add_argument("--tasks", required=True, help="comma-separated name:lang[@path], e.g. xcopa:zh,mtbench:zh@data/mt-bench/zh")
    p.add_argument("--out", required=True, help="result JSON to write (answers and samples go beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is faster on a busy CPU)")
    for f in _eval_config_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text,
                           **({"choices": ["loglik", "letter"]} if f.name == "mode" else {}))
    p.set_defaults(func=cmd_eval)

    c = subparsers.add_parser("compare", help="Markdown table of result JSONs (paper Table 1 shape), deltas vs the first")
    c.add_argument("files", nargs="+", help="result JSONs of lens eval (or report.json of lens run)")
    c.add_argument("--out", help="also write the table to this file")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    c.set_defaults(func=cmd_compare)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_results(doc: dict) -> str:
    lines = [f"model: {doc['model']}   device: {doc.get('device')}"]
    for e in doc["results"]:
        t = e["timings_s"]["total"]
        if e["task"] == "mtbench":
            score = f"score {e['score']:.2f}" if e.get("judged") and e.get("score") is not None else "not judged"
            lines.append(f"mtbench:{e['language']} n={e['n']}: {score}; fidelity {_pct(e['fidelity'])}%, "
                         f"clean {_pct(e['clean_fidelity'])}%, echo {_pct(e['echo'])}%, loop {_pct(e['loop'])}%, "
                         f"empty {_pct(e['empty'])}% ({t:.1f}s)")
        else:
            extra = ", ".join(f"{k} {_pct(m['value'])}%" for k, m in e["metrics"].items() if k != "acc")
            lines.append(f"{e['task']}:{e['language']} {e['mode']} n={e['n']}: acc {_pct(e['value'])}% "
                         f"± {_pct(e['stderr'])}" + (f" ({extra})" if extra else "") + f" ({t:.1f}s)")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from lensml.evaluation.suite import evaluate
    from lensml.models import ModelConfig, load_model

    out = Path(args.out)
    if out.is_dir():
        raise LensError(f"--out {out} is a directory: give a file name such as {out / 'results.json'}")
    if out.exists() and not args.overwrite:
        raise LensError(f"output {out} already exists: pass --overwrite or choose another --out")
    options = {f.name: getattr(args, f.name) for f in _eval_config_fields()}
    if args.threads is not None:
        if args.threads < 1:
            raise LensError(f"--threads must be at least 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    model, tok, name = load_model(ModelConfig(model=args.model, gguf=args.gguf, template=args.template,
                                              device=args.device, dtype=args.dtype))
    doc = evaluate(model, tok, name, args.tasks, out.parent, result_file=out.name, overwrite=args.overwrite, **options)
    print(format_results(doc))
    print(f"wrote {out}")
    return 0


def cmd_compare(args) -> int:
    from lensml.evaluation.compare import comparison_table, write_table

    table = comparison_table(args.files)
    print(table, end="")
    if args.out:
        write_table(table, Path(args.out), args.overwrite)
        print(f"wrote {args.out}")
    return 0
