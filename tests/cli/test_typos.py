"""A mistyped flag: refused in its subcommand's usage with the closest flag; a prefix of a flag is no flag."""

import argparse

import pytest

from lensml.cli import build_parser, main


def _parsers(parser):
    """The parser and every subcommand's, nested ones included."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_parser_refuses_abbreviations():
    parsers = list(_parsers(build_parser()))
    assert len(parsers) >= 10 and all(p.allow_abbrev is False for p in parsers)


@pytest.mark.parametrize("argv, usage, last_line", [
    (["run", "--eval-task", "xcopa:zh"], "usage: lens run [options]",
     "lens run: error: unrecognized arguments: --eval-task xcopa:zh (did you mean --eval-tasks?)"),
    (["run", "--train.lrr", "3"], "usage: lens run [options]",
     "lens run: error: unrecognized arguments: --train.lrr 3 (did you mean --train.lr?)"),
    (["run", "--no-overwrit"], "usage: lens run [options]",
     "lens run: error: unrecognized arguments: --no-overwrit (did you mean --no-overwrite?)"),
    (["probe", "--probe.sample=4"], "usage: lens probe [options]",
     "lens probe: error: unrecognized arguments: --probe.sample=4 (did you mean --probe.samples?)"),
    (["eval", "--task", "xcopa:zh", "--out", "r.json"], "usage: lens eval --tasks TASKS",
     "lens eval: error: unrecognized arguments: --task xcopa:zh (did you mean --tasks?)"),
    (["plot", "subspace", "RUN", "--layer", "3"], "usage: lens plot subspace RUN [options]",
     "lens plot subspace: error: unrecognized arguments: --layer 3 (did you mean --layers?)"),
    (["sweep", "--grid-fil", "g.yaml"], "usage: lens sweep (--grid",
     "lens sweep: error: unrecognized arguments: --grid-fil g.yaml (did you mean --grid-file?)"),
    (["chat", "m", "--comapre"], "usage: lens chat MODEL [options]",
     "lens chat: error: unrecognized arguments: --comapre (did you mean --compare?)"),
    (["compare", "a", "--refrence", "paper"], "usage: lens compare RESULT_OR_RUN",
     "lens compare: error: unrecognized arguments: --refrence paper (did you mean --reference?)"),
])
def test_a_typo_gets_its_subcommands_usage_and_the_closest_flag(argv, usage, last_line, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)  # what main() parses first
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err.startswith(usage) and err.splitlines()[-1] == last_line, err


def test_a_prefix_is_not_taken_for_the_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--eval-task", "xcopa:zh"])  # argparse's default ran it as --eval-tasks
    args = build_parser().parse_args(["run", "--eval-tasks", "xcopa:zh"])
    assert vars(args)["cfg:run:benchmarks.tasks"] == "xcopa:zh"


def test_nothing_close_gets_no_guess(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--bogus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[0] == "usage: lens run [options]"
    assert err[-1] == "lens run: error: unrecognized arguments: --bogus"
