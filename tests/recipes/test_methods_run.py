"""`lens run --method NAME` for every method, and `lens compare` of their run folders."""

import json

import pytest
import torch

from lensml.cli import main
from lensml.results.method_table import compare_runs, group_runs, load_run
from lensml.results.report import RunReport
from lensml.results.rundir import RunDir
from tests.helpers import write_parallel_data

METHODS = ["lens", "xsft", "xsft-full", "qalign", "sdrrl", "steer", "xsft-top"]
PAPER = {"xsft", "xsft-full", "qalign", "sdrrl"}  # the paper's baselines: every parameter
EXTRA = {"steer": ["--steer.select-prompts", "2", "--steer.select-tokens", "6"],
         "sdrrl": ["--sdrrl.max-new-tokens", "8"]}


def args(model_dir, data, out, method, langs="zh"):
    return ["run", "--model", str(model_dir), "--probe-data", str(data), "--train-data", str(data),
            "--eval.data", str(data), "--eval.samples", "4", "--eval.max-new-tokens", "6", "--langs", langs,
            "--lr", "1e-3", "--method", method, "--out", str(out)]


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    data = write_parallel_data(root / "qa.jsonl", repeat=2, responses=True)
    for method in METHODS:
        assert main(args(tiny_llama, data, root / method, method) + EXTRA.get(method, [])) == 0
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
        resolved = manifest["train_resolved"]
        assert report.train.steps == {"qalign": 4, "sdrrl": -(-resolved["instruction_rows"] // 8)}.get(method, 2)
        assert resolved["lr"] == 1e-3 and resolved["role"] == ("control" if method == "xsft-top" else "paper")
        assert (out / "patch" / "patch_config.json").is_file() and (out / "model" / "README.md").is_file()
        assert not run.steering.exists()
        model = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
        changed = {k for k, v in model.items() if not torch.equal(v, base[k])}
        if method in PAPER:
            assert changed == set(base)  # every parameter
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
    header = next(line for line in lines if line.startswith("| run | method | zh fidelity"))
    assert header.split(" | ")[2:6] == ["zh fidelity", "zh clean", "zh echo", "zh loop"] and "en NLL (change)" in header
    labels = ["base", "lens", "xsft", "xsft-full", "qalign", "sdrrl", "steer (control)", "xsft-top (control)"]
    quality = [line.split(" | ")[1] for line in lines[lines.index(header) + 2:lines.index(header) + 10]]
    assert quality == ["-", *labels[1:]] and "(control): not a row of the LENS paper" in text
    doc = json.loads((tmp_path / "cmp.json").read_text())
    g = doc["groups"][0]
    assert [r["label"] for r in g["quality"]] == ["base", *METHODS] and g["samples"] == 4
    assert [r["role"] for r in g["cost"]] == ["paper"] * 5 + ["control"] * 2
    for r, m in zip(g["quality"][1:], METHODS):
        report = RunReport.load(root / m)
        assert r["languages"]["zh"]["fidelity"] == report.quick_eval.enhanced["zh"].fidelity
        assert r["nll_change"] == report.quick_eval.retention.relative_change
    assert g["quality"][0]["languages"]["zh"]["fidelity"] == RunReport.load(root / "lens").quick_eval.base["zh"].fidelity
    shares = {label: r["trainable_share"] for label, r in zip(labels[1:], g["cost"])}
    assert all(shares[m] == 1.0 for m in PAPER) and 0 < shares["lens"] == shares["xsft-top (control)"] < 1
    assert shares["steer (control)"] == 0.0
    rows = {label: r["instruction_rows"] for label, r in zip(labels[1:], g["cost"])}
    assert rows["lens"] == rows["xsft"] == rows["xsft-full"] == rows["xsft-top (control)"] == 16  # 16 rows, zh
    assert rows["qalign"] == 32 and rows["sdrrl"] >= 16 and rows["steer (control)"] == 0
    assert all(r["train_s"] > 0 and r["host_gb"] > 0 for r in g["cost"])
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    with pytest.raises(Exception, match="already exists"):
        compare_runs([root / "lens"], tmp_path / "cmp.md")


def test_compare_keeps_other_languages_apart(runs, tiny_llama, tmp_path):
    root, data = runs
    assert main(args(tiny_llama, data, tmp_path / "sw", "xsft", langs="sw")) == 0
    groups = group_runs([load_run(root / "lens"), load_run(tmp_path / "sw"), load_run(root / "xsft")])
    assert [[r.label for r in g.rows] for g in groups] == [["lens", "xsft"], ["sw"]]
    text = compare_runs([root / "lens", tmp_path / "sw"])
    assert "en -> zh" in text and "en -> sw" in text


def test_compare_via_cli(runs, tmp_path, capsys):
    root, _ = runs
    assert main(["compare", str(root / "lens"), str(root / "xsft"), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "| xsft | xsft |" in printed and (tmp_path / "c" / "compare.json").is_file()


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


def test_method_inputs_checked_before_the_model_loads(tiny_llama, parallel_data, tmp_path, monkeypatch, capsys):
    """sdrrl's translator and xsft-full's --sft.full-data fail in one line, before any model loads."""
    import lensml.recipes.run as enhance

    def no_load(*_a, **_k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(enhance, "load_model", no_load)
    data = write_parallel_data(tmp_path / "qa.jsonl", repeat=1, responses=True)
    assert main(args(tiny_llama, data, tmp_path / "s", "sdrrl") + ["--sdrrl.translator", str(tiny_llama)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a translation model (a llama that is not encoder-decoder)" in err
    assert main(args(tiny_llama, data, tmp_path / "f", "xsft-full") + ["--sft.full-data", str(parallel_data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot tell the prompt column among en, sw, zh" in err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "你好"}\n', encoding="utf-8")
    assert main(args(tiny_llama, data, tmp_path / "f", "xsft-full") + ["--sft.full-data", str(prompts)]) == 2
    assert "has no responses (no column 'response' among prompt)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "f").exists()


def test_compare_with_the_papers_table5(runs, tmp_path, capsys):
    root, _ = runs
    assert main(["compare", *[str(root / m) for m in METHODS], "--reference", "paper"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("| run | method | trainable share"))
    assert head.endswith("| paper: trainable | paper: instruction data | paper: training time (A800) |")
    table5 = {line.split(" | ")[0][2:]: line.split(" | ")[-3:] for line in out.splitlines()
              if line.startswith("| ") and line.count(" | ") == head.count(" | ")}
    assert table5["lens"] == ["5.43%", "0.8K", "2 min 08 s |"] and table5["sdrrl"] == ["100%", "4K", "11 min 30 s |"]
    assert table5["xsft-full"] == ["100%", "111.5K", "192 min 35 s |"] and table5["qalign"][2] == "12 min 03 s |"
    assert table5["xsft-top"] == ["-", "-", "- |"]  # a control has no row in the paper
    assert main(["compare", str(root / "lens"), "--reference", "table9"]) == 2
