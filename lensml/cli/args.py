"""Command-line flags generated from the config dataclasses, grouped by section.

Why hand-written and not jsonargparse/tyro/simple-parsing: those generate flags from
dataclasses too, but each brings its own error format (we want one line and exit 2
for every bad input, through LensError), its own YAML merge rules (ours: defaults,
then --config, then flags, validated once as a whole) and its own help layout; this
module is ~100 lines of plain argparse, with no dependency to pin.

Conventions: one flag per option, `--section.field-name` (dashes; the underscore
spelling is accepted but not shown), a few short aliases for the common ones
(`--lr`, `--langs`), `--x/--no-x` for switches (`--train.no-x` when dotted), one default shown per option, and a
usage line that does not change between calls.

The methods' own sections (`--sft.*`, `--steer.*`, any method registered later) come from the
registry (lensml.methods), titles included; an option whose section has no title stops the
parser from being built, rather than its flags silently missing from the command line.
"""

from __future__ import annotations

import argparse
import difflib

from lensml import methods
from lensml.config import iter_fields
from lensml.recipes.config import ALIASES, load_config, run_config_class

#: Help sections of RunConfig's own options; the methods' sections (methods.section_titles) follow "loss".
SECTIONS = {
    "model": "model", "data": "data", "probe": "probing", "train": "training", "loss": "LENS loss",
    "eval": "quick evaluation (held-out prompts answered before and after training)",
    "benchmarks": "benchmarks (scored before and after training, into OUT/eval)", "output": "output",
}
PREFIX = "cfg:"


def run_titles() -> dict[str, str]:
    """Every help section of RunConfig, titled, in --help order: the registered methods' right after the LENS loss."""
    order = list(SECTIONS)
    cut = order.index("loss") + 1
    return {**{s: SECTIONS[s] for s in order[:cut]}, **methods.section_titles(),
            **{s: SECTIONS[s] for s in order[cut:]}}


def method_sections() -> list[str]:
    """The registered methods' option sections (sft, steer, ...), for a subcommand that trains."""
    return list(methods.sections())


class LensParser(argparse.ArgumentParser):
    """argparse without abbreviations, and with "did you mean" for an unknown flag, said in its subcommand's usage.

    argparse's defaults suit neither: a prefix of a flag is taken for the flag (`--eval-task` ran as
    --eval-tasks), and an unknown flag after a subcommand is reported by the top parser, with the usage
    of `lens` rather than of `lens run`. Subparsers are built from the class of their parent, so every
    parser of the command is one of these.
    """

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False  # a prefix is an error, never another flag
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.chosen(parsed).unknown(extras)
        return parsed

    def chosen(self, parsed: argparse.Namespace) -> "LensParser":
        """The innermost subcommand's parser (`lens plot subspace` -> its own), which owns the unknown flags."""
        parser = self
        while True:
            sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            name = getattr(parsed, sub.dest, None) if sub is not None else None
            if name not in getattr(sub, "choices", {}):
                return parser
            parser = sub.choices[name]

    def shown_flags(self) -> list[str]:
        """The flags --help lists (hidden older spellings are accepted, not suggested)."""
        return [s for a in self._actions if a.help != argparse.SUPPRESS for s in a.option_strings]

    def unknown(self, extras: list[str]) -> None:
        """Exit 2 with this parser's usage, naming the unknown arguments and the closest flag of the first."""
        message = f"unrecognized arguments: {' '.join(extras)}"
        flag = next((e.split("=", 1)[0] for e in extras if e.startswith("-")), None)
        names = {s.lstrip("-"): s for s in self.shown_flags()}  # dashes alike in all: they would inflate the match
        close = difflib.get_close_matches(flag.lstrip("-"), list(names), n=1, cutoff=0.6) if flag else []
        if close:
            message += f" (did you mean {names[close[0]]}?)"
        self.error(message)


class Switch(argparse.Action):
    """`--a.b.x` sets true, `--a.b.no-x` sets false (argparse's own form would be `--no-a.b.x`)."""

    def __init__(self, option_strings, dest, **kwargs):
        names = []
        for name in option_strings:
            head, _, leaf = name[2:].rpartition(".")
            names += [name, "--" + (head + "." if head else "") + "no-" + leaf]
        super().__init__(names, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        head, _, leaf = option_string[2:].rpartition(".")
        setattr(namespace, self.dest, not leaf.startswith("no-"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def section_of(dotted: str, f) -> str:
    if "section" in f.metadata:
        return f.metadata["section"]
    if dotted.startswith("train.loss."):
        return "loss"
    return dotted.split(".")[0]


def _fmt_default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser, sections: list[str], only: set[str] | None = None,
                         cls=None, tag: str = "run", prefix: str = "", titles: dict[str, str] | None = None,
                         sectioner=None, hidden: dict[str, str] | None = None, config_file: bool = True) -> None:
    """One flag per leaf option of cls whose section is listed (and, in the data section, whose name is in only).

    cls defaults to RunConfig with every method registered now, titles to its sections (run_titles);
    prefix is put before every dotted name (ModelConfig under "model." gives --model.device);
    hidden maps extra accepted-but-unlisted spellings (older flags) to dotted names.
    An option whose section has no title is a ValueError: a subcommand may leave a section out,
    but no section may be missing from every command line by accident.
    """
    cls = cls or run_config_class()
    titles = titles or run_titles()
    sectioner = sectioner or section_of
    unknown = [s for s in sections if s not in titles]
    if unknown:
        raise ValueError(f"help section '{unknown[0]}' has no title: add it to lensml.cli.args.SECTIONS")
    groups = {s: parser.add_argument_group(titles[s]) for s in sections}
    if config_file:
        parser.add_argument("--config", metavar="YAML", help="YAML file with any of the options below (flags win)")
    types = {}
    for name, tp, default, f in iter_fields(cls):
        dotted = prefix + name
        types[name] = tp
        section = sectioner(dotted, f)
        if section not in titles:
            raise ValueError(f"option {dotted} is in section '{section}', which has no help title: add it to "
                             f"lensml.cli.args.SECTIONS, or register its method's config with lensml.methods.register")
        if section not in groups or (only is not None and dotted not in only and section == "data"):
            continue
        help_text = f.metadata.get("help", "")
        if "default" not in help_text:
            help_text += f" (default: {_fmt_default(default)})"
        names = ["--" + dotted.replace("_", "-"), *ALIASES.get(dotted, [])]
        hidden_names = ["--" + dotted] if "_" in dotted else []
        _add(parser, groups[section], names, hidden_names, f"{PREFIX}{tag}:{name}", tp, help_text,
             f.metadata.get("choices"), dotted, repeat=f.metadata.get("repeat", False))
    for old, name in (hidden or {}).items():
        _add(parser, None, [], ["--" + old.replace("_", "-")], f"{PREFIX}{tag}:{name}", types[name], "", None, name)


def _add(parser, group, names, hidden_names, dest, tp, help_text, choices, dotted, repeat: bool = False) -> None:
    common = dict(dest=dest, default=argparse.SUPPRESS, **({"action": "append"} if repeat else {}))  # repeat: a list
    if names:
        if tp is bool:
            group.add_argument(*names, action=Switch, help=help_text, **common)
        else:
            group.add_argument(*names, metavar=dotted.split(".")[-1].upper(), help=help_text, choices=choices, **common)
    if hidden_names:
        if tp is bool:
            parser.add_argument(*hidden_names, action=Switch, help=argparse.SUPPRESS, **common)
        else:
            parser.add_argument(*hidden_names, help=argparse.SUPPRESS, **common)


def overrides_of(args: argparse.Namespace, tag: str = "run") -> dict[str, object]:
    head = f"{PREFIX}{tag}:"
    return {k[len(head):]: v for k, v in vars(args).items() if k.startswith(head)}


def config_from(args: argparse.Namespace, cls=None, tag: str = "run"):
    """Defaults, then --config YAML, then the flags that were given (cls: RunConfig with every method registered now)."""
    return load_config(getattr(args, "config", None), overrides_of(args, tag), cls)
