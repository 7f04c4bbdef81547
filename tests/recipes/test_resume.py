"""`lens run --resume`: an interrupted run takes up after its last finished stage and ends with the report an
uninterrupted run writes; other options or data are refused in one line, before the model loads."""

import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lensml.cli import main
from lensml.recipes import run as recipe
from lensml.recipes.resume import partial_folder

XCOPA = Path(__file__).parents[1] / "evaluation" / "fixtures" / "xcopa"


def args(model, data, out, *more):
    return ["run", "--model", str(model), "--probe-data", str(data), "--train-data", str(data), "--eval.data", str(data),
            "--eval.samples", "4", "--eval.max-new-tokens", "6", "--langs", "zh,sw", "--lr", "1e-3",
            "--train-samples", "16", "--eval-tasks", f"xcopa:zh@{XCOPA}", "--out", str(out), *more]


CLOCK = ("timings_s", "date", "created", "total_evaluation_time_seconds")


def numbers(out: Path) -> dict:
    """report.json without wall times and dates (the one part two runs of the same options do not share)."""
    def measured(doc):
        if isinstance(doc, dict):
            return {k: measured(v) for k, v in doc.items() if k not in CLOCK}
        return [measured(v) for v in doc] if isinstance(doc, list) else doc
    return measured(json.loads((out / "report.json").read_text()))


def answers(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]


def last_error(capsys) -> str:
    """The one `error:` line main printed last (progress bars and log lines may come before it)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")][-1]


def fail(*_a, **_k):
    raise AssertionError("a finished stage was done again")


@pytest.fixture(scope="module")
def whole(tiny_llama, parallel_data, tmp_path_factory):
    """One uninterrupted run: what every resumed run must end with."""
    root = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LENSML_CACHE", str(root / "cache"))
        assert main(args(tiny_llama, parallel_data, root / "run")) == 0
    return root / "run"


@pytest.fixture
def data(parallel_data, tmp_path):
    return Path(shutil.copy(parallel_data, tmp_path / "data.jsonl"))


def test_resume_after_training_failed_skips_the_finished_stages(whole, tiny_llama, data, tmp_path, monkeypatch,
                                                                caplog, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(recipe, "train_and_save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            main(args(tiny_llama, data, out))
    partial = partial_folder(out)
    assert not out.exists() and partial == tmp_path / ".run.partial"
    progress = json.loads((partial / "progress.json").read_text())
    assert list(progress["finished"]) == ["probe", "eval_base", "benchmarks_base"]
    assert (partial / "subspace").is_dir() and (partial / "eval" / "base" / "results.json").is_file()
    assert "run the same command with --resume" in caplog.text

    # Other options or other data are refused in one line, naming the difference, before any model loads.
    with monkeypatch.context() as mp:
        mp.setattr(recipe, "load_model", fail)
        assert main(args(tiny_llama, data, out, "--resume", "--lr", "2e-3")) == 2
        err = last_error(capsys)
        assert "train.lr: 0.001 then, 0.002 now" in err and "without --resume to start over" in err, err
        text = data.read_text(encoding="utf-8")
        data.write_text(text.replace("Why do cats purr?", "Why do dogs bark?", 1), encoding="utf-8")
        assert main(args(tiny_llama, data, out, "--resume")) == 2
        assert "the probe data differ from those" in last_error(capsys)
        data.write_text(text, encoding="utf-8")
    assert json.loads((partial / "progress.json").read_text())["finished"] == progress["finished"]

    # Resumed: probe, base answers and base benchmarks are not done again; the report is the uninterrupted one's.
    monkeypatch.setattr(recipe, "probe", fail)
    monkeypatch.setattr(recipe.quick, "answer_before", fail)
    bench = recipe._benchmarks
    monkeypatch.setattr(recipe, "_benchmarks", lambda m, t, n, c, where: fail() if where.name == "base" else
                        bench(m, t, n, c, where))
    caplog.clear()
    caplog.set_level(logging.INFO, logger="lensml")
    assert main(args(tiny_llama, data, out, "--resume")) == 0
    assert "probe: finished by the interrupted run" in caplog.text
    assert numbers(out) == numbers(whole) and answers(out) == answers(whole)
    report = json.loads((out / "report.json").read_text())
    assert report["timings_s"]["probe"] == progress["finished"]["probe"]["probe"]  # the time it took then
    assert not partial.exists() and not (out / "progress.json").exists() and not (out / "checkpoints").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_resume_after_training_finished_loads_the_trained_model(whole, tiny_llama, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(recipe.quick, "answer_after", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        assert main(args(tiny_llama, data, out)) == 130
    partial = partial_folder(out)
    progress = json.loads((partial / "progress.json").read_text())
    assert list(progress["finished"]) == ["probe", "eval_base", "benchmarks_base", "train"]
    assert set(progress["finished"]["train"]) == {"train", "save"}
    (partial / "eval" / "enhanced").mkdir(parents=True)
    (partial / "eval" / "enhanced" / "results.json").write_text("{}")  # what an unfinished stage left: removed

    monkeypatch.setattr(recipe, "train_and_save", fail)
    monkeypatch.setattr(recipe, "probe", fail)
    assert main(args(tiny_llama, data, out, "--resume")) == 0
    assert numbers(out) == numbers(whole) and answers(out) == answers(whole)
    trained, reference = load_file(out / "model" / "model.safetensors"), load_file(whole / "model" / "model.safetensors")
    assert all((trained[k] == reference[k]).all() for k in reference)
    losses = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line) for line in (whole / "losses.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train_resolved"] == json.loads((whole / "manifest.json").read_text())["train_resolved"]


def test_a_stale_partial_folder_is_replaced_without_resume(tiny_llama, data, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    partial = partial_folder(out)
    partial.mkdir()
    (partial / "subspace").mkdir()
    (partial / "progress.json").write_text(json.dumps({"finished": {"probe": {"probe": 1.0}}, "pid": 1, "host": "x"}))
    monkeypatch.setattr(recipe, "load_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):
        main(args(tiny_llama, data, out))
    assert "replacing" in caplog.text and "pass --resume to take it up instead" in caplog.text
    assert not partial.exists()  # replaced, and the new one finished no stage: nothing kept


def test_a_partial_folder_in_use_is_refused(tiny_llama, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    partial = partial_folder(out)
    partial.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (partial / "progress.json").write_text(json.dumps({"finished": {}, "pid": other.pid,
                                                           "host": socket.gethostname()}))
        monkeypatch.setattr(recipe, "load_model", fail)
        for more in ([], ["--resume"]):
            assert main(args(tiny_llama, data, out, *more)) == 2
            assert f"is being written by another lens run (process {other.pid})" in last_error(capsys)
    finally:
        other.kill()
        other.wait()
    assert (partial / "progress.json").is_file()


def test_a_folder_in_the_way_that_is_not_a_run_is_left_alone(tiny_llama, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    partial = partial_folder(out)
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    monkeypatch.setattr(recipe, "load_model", fail)
    assert main(args(tiny_llama, data, out)) == 2
    assert "holds no readable progress.json" in last_error(capsys) and (partial / "notes.txt").read_text() == "mine"
