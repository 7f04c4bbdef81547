"""`lens`: a thin command line over the library.

Every option of RunConfig is a flag (`--train.lr 1e-4`, `--probe.samples 300`), a
YAML file can set them all (`--config run.yaml`), and the common ones have short
aliases (`--lr`, `--langs`, `--lambda zh=1,ja=0.6`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from lensml.config import RunConfig, iter_fields, load_config
from lensml.errors import LensError

ALIASES = {
    "model.model": ["--model"], "model.gguf": ["--gguf"], "model.template": ["--template"], "model.device": ["--device"],
    "model.dtype": ["--dtype"], "model.trust_remote_code": ["--trust-remote-code"],
    "train.lr": ["--lr"], "train.loss.lambdas": ["--lambda"], "train.loss.lambda1": ["--lambda1"],
    "train.loss.lambda3": ["--lambda3"], "train.loss.retain": ["--retain"], "train.start_layer": ["--start-layer"],
    "train.epochs": ["--epochs"], "train.samples": ["--train-samples"], "probe.samples": ["--probe-samples"],
    "eval_tasks": ["--eval-tasks"],
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with any of the options below (command line wins)")
    for dotted, tp, default, help_text in iter_fields(RunConfig):
        names = {f"--{dotted}", f"--{dotted.replace('_', '-')}", *ALIASES.get(dotted, [])}
        kwargs = {"dest": f"cfg:{dotted}", "default": argparse.SUPPRESS, "help": f"{help_text} (default: {default})",
                  "metavar": dotted.split(".")[-1].upper()}
        if tp is bool:
            kwargs.update(nargs="?", const="true")
        parser.add_argument(*sorted(names, key=len), **kwargs)


def _config_from(args) -> RunConfig:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    return load_config(args.config, overrides)


def _fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:5.1f}%"


def format_report(report: dict) -> str:
    """The before/after table of a run."""
    lines = [f"model: {report['model']}   central: {report['central']}",
             "| lang | fidelity base | fidelity enhanced | clean base | clean enhanced | echo/loop/empty base | echo/loop/empty enhanced |",
             "|---|---|---|---|---|---|---|"]
    if "fidelity" in report:
        for lang in report["languages"]:
            deg = {s: report["degenerate"][s][lang] for s in ("base", "enhanced")}
            lines.append(f"| {lang} | {_fmt_pct(report['fidelity']['base'][lang])} | {_fmt_pct(report['fidelity']['enhanced'][lang])} "
                         f"| {_fmt_pct(report['clean_fidelity']['base'][lang])} | {_fmt_pct(report['clean_fidelity']['enhanced'][lang])} "
                         f"| {_fmt_pct(deg['base'])} | {_fmt_pct(deg['enhanced'])} |")
        r = report["english_retention"]
        lines.append(f"{report['central']} answer NLL: base {r['base_nll']:.4f}, enhanced {r['enhanced_nll']:.4f} "
                     f"({100 * r['relative_change']:+.2f}%)")
    if "eval_tasks" in report:
        lines.append(report["eval_tasks"]["table"])
    t = report.get("timings_s", {})
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    return "\n".join(lines)


def cmd_run(args) -> int:
    from lensml.pipeline import run
    report = run(_config_from(args))
    print(format_report(report))
    print(f"wrote {args_out(args)}")
    return 0


def args_out(args) -> str:
    return getattr(args, "cfg:out", RunConfig().out)


def cmd_probe(args) -> int:
    from lensml.pipeline import probe_job
    sub = probe_job(_config_from(args))
    print(f"subspace: {sub.num_layers} layers, d={sub.hidden_size}, languages {','.join(sub.languages)}, "
          f"rank {sub.rank} -> {args_out(args)}")
    return 0


def cmd_train(args) -> int:
    from lensml.pipeline import train_job
    summary = train_job(_config_from(args), args.subspace)
    final = summary["losses"][-1] if summary["losses"] else {}
    print(f"trained {summary['steps']} steps at lr {summary['lr']:.2e}; final loss {final.get('loss', float('nan')):.4g} "
          f"-> {args_out(args)}")
    return 0


def cmd_chat(args) -> int:
    from lensml.chat import chat
    return chat(args.model, args.base, args.compare, args.prompt, args.max_new_tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lens", description="LENS: multilingual enhancement via language subspaces")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (per-step losses)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="probe, train, save and evaluate (default: SmolLM2-135M, en -> zh)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("probe", help="probe a model and write a subspace artifact to --out")
    _add_config_flags(p)
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("train", help="train a model with a subspace artifact; write the enhanced model to --out")
    p.add_argument("--subspace", required=True, help="directory written by `lens probe` (or OUT/subspace of a run)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("chat", help="answer prompts with a model; --compare shows the base model beside it")
    p.add_argument("model", help="model directory (e.g. runs/default/model), Hub id or packaged name")
    p.add_argument("--compare", action="store_true", help="also answer with the base model (read from the run's manifest or --base)")
    p.add_argument("--base", help="base model to compare with (default: the run's manifest)")
    p.add_argument("--prompt", action="append", help="prompt to answer (repeatable); default: read lines from stdin")
    p.add_argument("--max-new-tokens", type=int, default=128, help="greedy tokens per answer (default: 128)")
    p.set_defaults(func=cmd_chat)
    try:
        from lensml.evaluation.cli import add_eval_commands
    except ImportError:
        pass
    else:
        add_eval_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except LensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
