"""Stages that hand off: `lens train --subspace S` trains the languages S was probed on unless told otherwise."""

import yaml

from lensml.cli import main
from lensml.lens.subspace import LanguageSubspace
from lensml.results.report import RunReport


def test_train_takes_the_languages_and_central_language_of_its_subspace(tiny_llama, parallel_data, tmp_path, capsys):
    probe_dir, train_dir = tmp_path / "probe", tmp_path / "train"
    assert main(["probe", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--langs", "sw",
                 "--central", "zh", "--out", str(probe_dir)]) == 0
    sub = LanguageSubspace.from_pretrained(probe_dir / "subspace")
    assert (sub.languages, sub.central) == (["zh", "sw"], "zh")
    written = yaml.safe_load((probe_dir / "config.yaml").read_text())  # a probe folder records its options too
    assert (written["langs"], written["central"]) == (["sw"], "zh")
    train = ["train", "--model", str(tiny_llama), "--subspace", str(probe_dir), "--train-data", str(parallel_data),
             "--train-samples", "8", "--train.batch-size", "4"]
    # Neither --langs nor --central: both from the subspace (before, this asked for the default zh -> en).
    capsys.readouterr()
    assert main([*train, "--dry-run", "--out", str(train_dir)]) == 0
    assert "languages: zh, sw (central zh)" in capsys.readouterr().out
    assert main([*train, "--out", str(train_dir)]) == 0
    report = RunReport.load(train_dir)
    assert (report.languages, report.central, report.train.steps) == (["zh", "sw"], "zh", 2)
    assert yaml.safe_load((train_dir / "config.yaml").read_text())["langs"] == ["sw"]
    # Given on the command line, the languages are the user's: a language the subspace lacks is refused, as before.
    capsys.readouterr()
    assert main([*train, "--langs", "sw", "--central", "en", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "subspace covers languages zh,sw with central 'zh', asked for sw with central 'en'" in err
    # Given in a --config file counts as given too (the languages not given still come from the subspace).
    config = tmp_path / "mine.yaml"
    config.write_text("central: en\n")
    assert main([*train, "--config", str(config), "--out", str(tmp_path / "other")]) == 2
    assert "asked for zh,sw with central 'en'" in capsys.readouterr().err
