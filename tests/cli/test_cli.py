"""The `lens` command line: help a person can read, flags from the dataclasses, one-line errors."""

import argparse
import dataclasses
import subprocess
import sys

import pytest
import torch

from lensml import methods
from lensml.cli import build_parser, main
from lensml.cli.args import add_config_arguments
from lensml.lens.subspace import LanguageSubspace
from lensml.recipes.config import RunConfigBase
from tests.recipes.test_run import common, no_leftovers


def _help(*argv) -> str:
    return subprocess.run([sys.executable, "-m", "lensml.cli", *argv, "--help"], capture_output=True, text=True,
                          check=True).stdout


def test_run_help_is_grouped_stable_and_shows_one_default_each():
    first, second = _help("run"), _help("run")
    assert first == second  # two processes (different hash seeds) print the same text
    sections = ["model:", "data:", "probing:", "training:", "LENS loss:",
                "fine-tuning baselines (--method xsft, xsft-full, qalign, xsft-top):",
                "training-free steering (--method steer):",
                "SDRRL: self-distillation from the central language (--method sdrrl):", "quick evaluation", "benchmarks",
                "output:"]
    positions = [first.index("\n" + s) for s in sections]
    assert positions == sorted(positions)
    assert first.startswith("usage: lens run [options]")
    for block in first.split("\n  --")[2:]:  # after -h and --config: every option states its default once
        assert block.count("(default") == 1, block
    assert "--train.no-gradient-checkpointing" in first and "--no-overwrite" in first


def test_train_help_shows_every_methods_options():
    text = _help("train")
    assert "--subspace" in text and "--sft.include-central" in text and "--steer.strength" in text
    args = build_parser().parse_args(["train", "--method", "steer", "--steer.strength", "0.5", "--sft.no-include-central"])
    assert vars(args)["cfg:run:steer.strength"] == "0.5" and vars(args)["cfg:run:sft.include_central"] is False


def test_a_config_section_without_a_help_title_stops_the_parser():
    """A section nobody titled used to lose its flags silently; now the parser refuses to build."""

    @dataclasses.dataclass
    class Extra:
        """Not registered anywhere."""

        knob: int = dataclasses.field(default=1, metadata={"help": "a knob"})

    with_extra = dataclasses.make_dataclass("WithExtra", [("extra", Extra, dataclasses.field(default_factory=Extra))],
                                            bases=(RunConfigBase,))
    with pytest.raises(ValueError, match="option extra.knob is in section 'extra', which has no help title"):
        add_config_arguments(argparse.ArgumentParser(), ["model"], cls=with_extra)
    with pytest.raises(ValueError, match="help section 'extra' has no title"):
        add_config_arguments(argparse.ArgumentParser(), ["model", "extra"])


def test_a_registered_section_that_loses_its_title_stops_the_parser(monkeypatch):
    monkeypatch.setattr(methods, "section_titles", lambda: {"sft": "fine-tuning baselines"})
    with pytest.raises(ValueError, match="section 'steer', which has no help title"):
        build_parser()


def test_probe_help_shows_only_what_probing_uses():
    text = _help("probe")
    assert "--probe.samples" in text and "--probe-data" in text and "--model" in text
    for absent in ("--train-data", "--train.lr", "--lambda", "--eval.data", "--benchmarks"):
        assert absent not in text, absent


def test_verbose_after_the_subcommand():
    args = build_parser().parse_args(["run", "-v", "--langs", "zh"])
    assert args.verbose is True
    assert build_parser().parse_args(["-v", "probe"]).verbose is True


def _fails(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may come before it
    assert err.startswith("error: ") and needle in err, err


@pytest.mark.parametrize("extra, needle", [
    (["--langs", "xx"], "unknown language code 'xx'"),
    (["--langs", "ja"], "has no 'ja' texts"),
    (["--probe-samples", "1000"], "1000 asked"),
    (["--train-samples", "500"], "500 asked"),
    (["--model", "./does/not/exist"], "does not exist"),
    (["--retain", "sometimes"], "retain must be"),
    (["--train.lr", "fast"], "cannot read 'fast'"),
    (["--epochs", "-1"], "train.epochs must be at least 1"),
    (["--epochs", "0"], "train.epochs must be at least 1"),
    (["--epochs", "1.7"], "whole number"),
    (["--train.batch-size", "0"], "train.batch_size must be at least 1"),
    (["--train.grad-accum", "0"], "train.grad_accum must be at least 1"),
    (["--probe.batch-size", "0"], "probe.batch_size must be at least 1"),
    (["--lr", "-1"], "train.lr must be a finite number > 0"),
    (["--lr", "inf"], "train.lr must be a finite number > 0"),
    (["--train.warmup-ratio", "1"], "warmup_ratio must be in [0, 1)"),
    (["--train.max-length", "0"], "train.max_length must be at least 1"),
    (["--lambda", "ja=1"], "not trained"),
    (["--lambda1", "nan"], "NaN"),
    (["--method", "magic"], "unknown method 'magic'"),
])
def test_bad_run_inputs(extra, needle, tiny_llama, parallel_data, tmp_path, capsys):
    out = tmp_path / "run"
    _fails(["run", *common(tiny_llama, parallel_data), "--out", str(out), *extra], capsys, needle)
    assert not out.exists() and no_leftovers(tmp_path)


def test_unknown_flag_is_an_argparse_error(tiny_llama, parallel_data, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["run", *common(tiny_llama, parallel_data), "--out", str(tmp_path / "r"), "--no.such", "1"])
    assert exc.value.code == 2


def test_existing_output_is_refused(tiny_llama, parallel_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(["run", *common(tiny_llama, parallel_data), "--out", str(out)], capsys, "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


def test_output_that_is_a_file_is_refused_before_probing(tiny_llama, parallel_data, tmp_path, capsys, monkeypatch):
    import lensml.recipes.probe as jobs

    monkeypatch.setattr(jobs, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    out = tmp_path / "file.txt"
    out.write_text("mine")
    _fails(["probe", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--out", str(out),
            "--overwrite"], capsys, "is a file")
    assert out.read_text() == "mine"


def test_yaml_whose_top_level_is_a_list(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("- langs: [zh]\n")
    _fails(["run", "--config", str(path)], capsys, "must be a mapping")


def test_subspace_model_mismatch(tiny_llama, parallel_data, tmp_path, capsys):
    sub_dir = tmp_path / "sub"
    LanguageSubspace.fit(torch.randn(4, 2, 16, dtype=torch.float64), ["en", "zh"], "en").save_pretrained(sub_dir)
    _fails(["train", "--model", str(tiny_llama), "--subspace", str(sub_dir), "--train-data", str(parallel_data),
            "--langs", "zh", "--out", str(tmp_path / "m")], capsys, "hidden size 16")
    _fails(["train", "--model", str(tiny_llama), "--subspace", str(tmp_path / "nope"), "--train-data",
            str(parallel_data), "--langs", "zh", "--out", str(tmp_path / "m")], capsys, "not a lensml subspace")
    assert not (tmp_path / "m").exists()


def test_divergent_training_writes_nothing(tiny_llama, parallel_data, tmp_path, capsys):
    """lr 1e10 for two steps used to save a broken model with exit 0: the trained weights are checked now."""
    out = tmp_path / "run"
    _fails(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--lr", "1e10", "--train-samples", "8",
            "--train.batch-size", "4"], capsys, "non-finite")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".run.partial"]


def test_unwritable_output_is_refused_before_loading(tiny_llama, parallel_data, capsys, monkeypatch):
    import lensml.recipes.run as recipe

    monkeypatch.setattr(recipe, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    _fails(["run", *common(tiny_llama, parallel_data), "--out", "/proc/lensml-test/run"], capsys, "cannot write to /proc")


def test_subspace_of_another_model_warns(tiny_llama, parallel_data, tmp_path, caplog):
    sub_dir = tmp_path / "sub"
    LanguageSubspace.fit(torch.randn(4, 2, 32, dtype=torch.float64), ["en", "zh"], "en",
                         metadata={"model": "org/other-model"}).save_pretrained(sub_dir)
    with caplog.at_level("WARNING"):
        assert main(["train", "--model", str(tiny_llama), "--subspace", str(sub_dir), "--train-data",
                     str(parallel_data), "--langs", "zh", "--out", str(tmp_path / "m")]) == 0
    assert any("org/other-model" in r.message and str(tiny_llama) in r.message for r in caplog.records)


def test_run_exits_2_when_the_judge_left_answers_unrated(monkeypatch, capsys, tmp_path):
    """A run's benchmarks with an unrated judge step: the table and the files stay, the exit code says it failed."""
    import lensml.cli as cli_module
    from lensml.results.report import RunReport

    side = {"results": [{"task": "mtbench", "language": "zh", "value": 0.5, "judge_error": "connection refused"}]}
    report = RunReport("m", "en", ["en", "zh"], benchmarks={"base": side, "enhanced": side})
    monkeypatch.setattr(cli_module, "run", lambda cfg, resume=False: report)
    assert main(["run", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "mtbench:zh: connection refused" in err
    side["results"][0].pop("judge_error")
    assert main(["run", "--out", str(tmp_path / "out")]) == 0
