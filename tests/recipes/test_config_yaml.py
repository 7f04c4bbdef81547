"""OUT/config.yaml: every option of a job, read back by --config into the same config, and a run again from it
gives the same report; a job's manifest.json or folder is a --config too; `lens --version`."""

import json
import shutil
from importlib import metadata

import pytest
import yaml

from lensml.cli import build_parser, main
from lensml.cli.args import config_from
from lensml.errors import LensError
from lensml.recipes.config import load_config
from lensml.training import start_layer_given
from tests.recipes.test_resume import answers, numbers


def test_config_yaml_runs_the_run_again(tiny_llama, parallel_data, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["run", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--train-data", str(parallel_data),
            "--eval.data", str(parallel_data), "--eval.samples", "4", "--eval.max-new-tokens", "6",
            "--langs", "zh,sw", "--train-samples", "16", "--lambda", "sw=2", "--out", str(first)]
    given = config_from(build_parser().parse_args(argv))
    assert main(argv) == 0
    text = (first / "config.yaml").read_text()
    doc = yaml.safe_load(text)
    # Every option is there as given or defaulted; the learning rate, resolved by model size when training
    # started, stays unset (so it resolves again the same way) and its value is in the header.
    assert doc["langs"] == ["zh", "sw"] and doc["train"]["loss"]["lambdas"] == {"sw": 2.0}
    assert doc["train"]["lr"] is None and "train.lr = 0.001," in text.splitlines()[1]
    assert "start_layer" not in doc["train"] and "not given: train.start_layer" in text
    for source in (first / "config.yaml", first / "manifest.json", first):
        again = load_config(str(source), {})
        assert again == given and not start_layer_given(again.train)
    # A folder from before config.yaml: its manifest's config, the default start layer still not given.
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(first / "manifest.json", old / "manifest.json")
    again = load_config(str(old / "manifest.json"), {})
    assert again == given and not start_layer_given(again.train)

    capsys.readouterr()
    assert main(["run", "--config", str(first / "config.yaml"), "--out", str(second)]) == 0
    assert numbers(second) == numbers(first) and answers(second) == answers(first)
    one, two = (json.loads((d / "manifest.json").read_text()) for d in (first, second))
    assert two["train_resolved"] == one["train_resolved"] and two["train_resolved"]["lr"] == pytest.approx(1e-3)
    assert {**two["config"], "out": None} == {**one["config"], "out": None}
    assert (second / "config.yaml").read_text() == text.replace(str(first), str(second))


@pytest.mark.parametrize("manifest, needle", [
    ({"kind": "sweep", "versions": {"lensml": "0"}, "config": {}}, "the manifest of `lens sweep`, which records no run"),
    ({"kind": "run", "versions": {"lensml": "0"}}, "the manifest of `lens run`, which records no run"),
])
def test_a_manifest_without_run_options_is_refused(tmp_path, capsys, manifest, needle):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--config", str(tmp_path / "manifest.json")]) == 2
    assert needle in capsys.readouterr().err


def test_a_folder_that_no_job_wrote_is_refused(tmp_path):
    with pytest.raises(LensError, match="is a folder without config.yaml or manifest.json"):
        load_config(str(tmp_path), {})


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"lens {metadata.version('lensml')}"
