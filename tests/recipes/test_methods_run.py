"""`lens run --method NAME` for every method, and `lens compare` of their run folders."""

import json

import pytest
import torch

from lensml.cli import main
from lensml.results.method_table import compare_runs, group_runs, load_run
from lensml.results.report import RunReport
from lensml.results.rundir import RunDir
from tests.helpers import write_parallel_data

METHODS = ["lens", "xsft", "xsft-full", "qalign", "steer"]


def args(model_dir, data, out, method, langs="zh"):
    return ["run", "--model", str(model_dir), "--probe-data", str(data), "--train-data", str(data),
            "--eval.data", str(data), "--eval.samples", "4", "--eval.max-new-tokens", "6", "--langs", langs,
            "--lr", "1e-3", "--method", method, "--out", str(out)]


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    data = write_parallel_data(root / "qa.jsonl", repeat=2, responses=True)
    for method in METHODS:
        extra = ["--steer.select-prompts", "2", "--steer.select-tokens", "6"] if method == "steer" else []
        assert main(args(tiny_llama, data, root / method, method) + extra) == 0
    return root, data


def test_every_method_writes_the_same_outputs(runs, tiny_llama):
    root, _ = runs
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    for method in METHODS:
        out = root / method
        run = RunDir(out)
        report = RunReport.load(run.path)
        manifest = run.read_manifest()
        assert report.method == method == manifest["method"] and set(report.quick_eval.enhanced) == {"en", "zh"}
        assert run.plot.is_file() and run.answers.is_file() and run.is_run()
        if method == "steer":  # no training, no model copy: the subspace and the settings reproduce it
            assert report.train.steps == 0 and report.train.trainable_parameters == 0
            assert (out / "steering" / "steering.json").is_file() and not (out / "model").exists()
            assert not (out / "patch").exists() and manifest["train_resolved"]["steer"]["strength"] is not None
            card = (out / "steering" / "README.md").read_text()  # the card sits beside the settings
            assert "No weight of the model changed" in card and "lens chat PATH/TO/RUN" in card
            assert "--steer PATH/TO/RUN/steering" in card and "chosen by measurement" in card
            assert "`lens run --method steer`" in card and "library_name" not in card
            continue
        assert report.train.steps == (4 if method == "qalign" else 2)
        assert manifest["train_resolved"]["lr"] == 1e-3
        assert (out / "patch" / "patch_config.json").is_file() and (out / "model" / "README.md").is_file()
        assert not run.steering.exists()
        model = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
        changed = {k for k, v in model.items() if not torch.equal(v, base[k])}
        if method == "xsft-full":
            assert "model.layers.0.mlp.up_proj.weight" in changed
        else:
            assert changed and all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in changed)
        assert (out / "subspace").is_dir() == (method == "lens")


def test_train_steer_writes_the_card_beside_the_steering(runs, tiny_llama, tmp_path, capsys):
    """`lens train --method steer`: no model/ to hold a card, so it sits in OUT/steering, as `lens run` puts it."""
    root, data = runs
    settings = tmp_path / "steer.yaml"
    settings.write_text("steer:\n  strength: 1.0\n")  # given: no measurement, and the card says so
    out = tmp_path / "train-steer"
    assert main(["train", "--model", str(tiny_llama), "--subspace", str(root / "lens"), "--train-data", str(data),
                 "--langs", "zh", "--method", "steer", "--config", str(settings), "--out", str(out)]) == 0
    run = RunDir(out)
    manifest, report = run.read_manifest(), RunReport.load(run.path)
    assert manifest["kind"] == "train" and manifest["method"] == "steer" == report.method
    assert manifest["train_resolved"]["steer"]["strength"] == 1.0 and report.quick_eval is None
    assert run.steering_or_none() and run.subspace.is_dir() and run.plot.is_file()
    assert not run.model.exists() and not run.patch.exists() and run.is_steer_run()
    card = run.steering_card.read_text()
    assert "`lens train --method steer`" in card and "as given (--steer.strength)" in card
    assert f"Subspace: `{root / 'lens'}`" in card and "No weight changed (0 of" in card
    # What the card says works: the folder chats as its base model, steered.
    capsys.readouterr()
    assert main(["chat", str(out), "--compare", "--prompt", "Why do cats purr?", "--max-new-tokens", "2"]) == 0
    assert "--- steered" in capsys.readouterr().out


def test_compare_runs_table_json_and_picture(runs, tmp_path):
    root, _ = runs
    text = compare_runs([root / m for m in METHODS], tmp_path / "cmp.md")
    lines = text.splitlines()
    assert lines[0].startswith("### ") and "en -> zh (4 held-out prompts per language)" in lines[0]
    header = next(line for line in lines if line.startswith("| method | zh fidelity"))
    assert header.split(" | ")[1:5] == ["zh fidelity", "zh clean", "zh echo", "zh loop"] and "en NLL (change)" in header
    quality = [line.split(" | ")[0][2:] for line in lines[lines.index(header) + 2:lines.index(header) + 8]]
    assert quality == ["base", *METHODS]
    doc = json.loads((tmp_path / "cmp.json").read_text())
    g = doc["groups"][0]
    assert [r["method"] for r in g["quality"]] == ["base", *METHODS] and g["samples"] == 4
    for r, m in zip(g["quality"][1:], METHODS):
        report = RunReport.load(root / m)
        assert r["languages"]["zh"]["fidelity"] == report.quick_eval.enhanced["zh"].fidelity
        assert r["nll_change"] == report.quick_eval.retention.relative_change
    assert g["quality"][0]["languages"]["zh"]["fidelity"] == RunReport.load(root / "lens").quick_eval.base["zh"].fidelity
    shares = {r["method"]: r["trainable_share"] for r in g["cost"]}
    assert shares["xsft-full"] == 1.0 and 0 < shares["lens"] == shares["xsft"] == shares["qalign"] < 1
    assert shares["steer"] == 0.0
    assert all(r["train_s"] > 0 and r["host_gb"] > 0 for r in g["cost"])
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    with pytest.raises(Exception, match="already exists"):
        compare_runs([root / "lens"], tmp_path / "cmp.md")


def test_compare_keeps_other_languages_apart(runs, tiny_llama, tmp_path):
    root, data = runs
    assert main(args(tiny_llama, data, tmp_path / "sw", "xsft", langs="sw")) == 0
    groups = group_runs([load_run(root / "lens"), load_run(tmp_path / "sw"), load_run(root / "xsft")])
    assert [[r.label for r in g.rows] for g in groups] == [["lens", "xsft"], ["xsft"]]
    text = compare_runs([root / "lens", tmp_path / "sw"])
    assert "en -> zh" in text and "en -> sw" in text


def test_compare_via_cli(runs, tmp_path, capsys):
    root, _ = runs
    assert main(["compare", str(root / "lens"), str(root / "xsft"), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "| xsft |" in printed and (tmp_path / "c" / "compare.json").is_file()


def test_responses_checked_before_the_model_loads(tiny_llama, parallel_data, tmp_path, monkeypatch, capsys):
    import lensml.recipes.run as enhance

    def no_load(*_a, **_k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(enhance, "load_model", no_load)
    assert main(args(tiny_llama, parallel_data, tmp_path / "x", "xsft")) == 2
    err = capsys.readouterr().err
    assert "has no responses" in err and "give data with responses" in err
    assert main(args(tiny_llama, parallel_data, tmp_path / "x", "sft")) == 2
    assert "unknown method 'sft'" in capsys.readouterr().err


def _fake_run(folder, method, zh_fid, zh_clean, nll_after, share, base_fid=0.25):
    """A run folder with hand-set numbers: every table cell can be checked."""
    from lensml.io import write_json_atomic
    from lensml.results.report import LanguageScores, QuickEval, Retention, TrainSummary

    def scores(fid, clean):
        return LanguageScores(n=40, fidelity=fid, clean_fidelity=clean, echo=0.1, loop=0.05, empty=0.0, degenerate=0.15)

    q = QuickEval(40, {"en": scores(1.0, 0.95), "zh": scores(base_fid, 0.2)},
                  {"en": scores(1.0, 0.9), "zh": scores(zh_fid, zh_clean)}, Retention(0.8, nll_after))
    report = RunReport("m", "en", ["en", "zh"], TrainSummary(method, 25, 1e-3, {}, int(share * 1000), 1000), q,
                       timings_s={"train": 12.5, "total": 100.0})
    folder.mkdir()
    write_json_atomic(folder / "report.json", report.to_dict())
    write_json_atomic(folder / "manifest.json", {"kind": "run", "method": method, "peak_memory": {"host_gb": 1.5},
                                                 "config": {"eval": {"data": "embedded:heldout", "samples": 40}}})
    return folder


def test_methods_table_cells_by_hand(tmp_path):
    a = _fake_run(tmp_path / "a", "lens", 1.0, 0.55, 0.796, 0.3)
    b = _fake_run(tmp_path / "b", "xsft", 0.875, 0.5, 0.88, 0.3)
    text = compare_runs([a, b], tmp_path / "t.md")
    quality = text.split("\n\n")[1]  # heading, quality table, cost table
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in quality.splitlines()[2:]}
    assert rows["base"][:4] == ["25.0", "20.0", "10.0", "5.0"]
    assert rows["lens"][:4] == ["100.0", "55.0", "10.0", "5.0"] and rows["lens"][4:6] == ["100.0", "90.0"]
    assert rows["lens"][6].startswith("0.7960 (-0.50%)") and rows["xsft"][6].startswith("0.8800 (+10.00%)")
    assert rows["base"][6].startswith("0.8000 (+0.00%)")
    cost = [line for line in text.splitlines() if line.startswith("| xsft | 25 |")]
    assert cost == ["| xsft | 25 | 1.0e-03 | 30.00% | - | 12.5 | 100.0 | 1.50 | - |"]
    assert "Not comparable" not in text
    c = _fake_run(tmp_path / "c", "qalign", 0.5, 0.5, 0.8, 0.3, base_fid=0.5)  # another base: not like for like
    assert "**Not comparable:** the base answers of qalign" in compare_runs([a, c])
