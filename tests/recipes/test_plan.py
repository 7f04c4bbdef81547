"""`lens run --dry-run` / `lens train --dry-run`: options, data, model config and output checked, the plan and the
resolved options printed, and nothing loaded or written."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig

from lensml.cli import main
from lensml.lens.probing import ProbeConfig, probe
from lensml.recipes.config import load_config
from lensml.recipes.plan import plan_job
from lensml.runtime import models
from lensml.runtime.models import ModelConfig, load_model
from lensml.training import default_lr


@pytest.fixture
def nothing_loads(monkeypatch):
    """Weights, tokenizers and GGUF conversions fail the test: a dry run reads configs only."""
    def refuse(*_a, **_k):
        raise AssertionError("a dry run loaded something heavy")
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)
    monkeypatch.setattr(models, "convert_gguf", refuse)


def _files(root):
    return sorted(p for p in root.rglob("*"))


def test_run_dry_run_prints_the_plan_and_writes_nothing(tiny_llama, parallel_data, tmp_path, nothing_loads, capsys):
    out = tmp_path / "runs" / "new"
    before = _files(tmp_path)
    assert main(["run", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--train-data",
                 str(parallel_data), "--eval.data", str(parallel_data), "--langs", "zh,sw", "--out", str(out),
                 "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("dry run of lens run (method lens): nothing was loaded or written")
    assert "LlamaForCausalLM (llama), 4 layers, hidden 32" in shown
    assert "languages: en, zh, sw (central en); subspace rank r = 2" in shown
    assert "data:     train: " in shown and "24 rows, 24 used" in shown
    assert "training: layers 2, 3 of 4" in shown and "3 optimiser steps" in shown and "lr 0.001," in shown  # size default
    assert f"writes:   {out / 'model'}" in shown and f"writes:   {out / 'patch'}" in shown
    assert "model.gguf" not in shown  # not a GGUF model
    assert "retain: both" in shown and "lambda3: 10.0" in shown  # LENS's small-model defaults, resolved
    assert not out.exists() and not (tmp_path / "runs").exists() and _files(tmp_path) == before


def test_the_plan_is_what_the_job_resolves(tiny_llama, parallel_data, tmp_path):
    cfg = load_config(None, {"model.model": str(tiny_llama), "probe_data": str(parallel_data),
                             "train_data": str(parallel_data), "eval.enabled": False, "out": str(tmp_path / "o"),
                             "train.batch_size": 5, "train.epochs": 2})
    plan = plan_job(cfg)
    model, _, _ = load_model(ModelConfig(model=str(tiny_llama)))
    assert plan.family.parameters == sum(p.numel() for p in model.parameters())
    top = [p for i in (2, 3) for p in model.model.layers[i].parameters()]
    assert plan.trainable_parameters == sum(p.numel() for p in top) and plan.trained_layers == [2, 3]
    assert plan.steps == 2 * 5 and plan.resolved.train.lr == default_lr(plan.family.parameters)
    assert plan.data["train"].endswith("24 rows, 24 used") and "eval" not in plan.data


def test_size_defaults_come_from_the_config_alone(tmp_path, parallel_data):
    """An 8B Llama-3 shape, never built with weights: the paper's lr and LENS's large-model loss defaults."""
    shape = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
    cfg = load_config(None, {"model.model": "meta-llama/Meta-Llama-3-8B-Instruct", "probe_data": str(parallel_data),
                             "train_data": str(parallel_data), "eval.enabled": False, "out": str(tmp_path / "o")})
    plan = plan_job(cfg, config=shape)
    assert plan.family.parameters == 8_030_261_248 and plan.trained_layers == [30, 31]
    assert plan.resolved.train.lr == pytest.approx(1e-5) and plan.resolved.train.loss.retain == "mean"
    assert plan.resolved.train.loss.lambda3 == 1.0 and 0.05 < plan.trainable_share < 0.056  # the paper's 5.43%
    assert cfg.train.lr is None  # the given options are left as given


@pytest.mark.parametrize("extra, needle", [
    (["--out", "{existing}"], "already exists: pass --overwrite"),
    (["--train-samples", "500"], "training data has 24 prompts, 500 asked"),
    (["--model", "{tmp}/nowhere/model"], "does not exist: check --model"),
])
def test_a_bad_plan_fails_in_one_line(extra, needle, tiny_llama, parallel_data, tmp_path, nothing_loads, capsys):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "x").write_text("mine")
    extra = [e.format(existing=tmp_path / "existing", tmp=tmp_path) for e in extra]
    args = ["run", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--train-data", str(parallel_data),
            "--out", str(tmp_path / "o"), *extra, "--dry-run"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_train_dry_run_checks_the_subspace_against_the_model(tiny_llama, parallel_data, tmp_path, capsys):
    from lensml.data.loaders import load_texts

    model, tok, name = load_model(ModelConfig(model=str(tiny_llama)))
    sub = probe(model, tok, load_texts(str(parallel_data), ["en", "zh"]), "en", ProbeConfig(), name)
    sub.save_pretrained(tmp_path / "probe" / "subspace")
    common = ["train", "--subspace", str(tmp_path / "probe"), "--train-data", str(parallel_data), "--langs", "zh",
              "--out", str(tmp_path / "t"), "--dry-run"]
    assert main([*common, "--model", str(tiny_llama)]) == 0
    shown = capsys.readouterr().out
    assert "dry run of lens train (method lens)" in shown and "subspace rank r = 1" in shown
    assert "writes:   " + str(tmp_path / "t" / "subspace") in shown and not (tmp_path / "t").exists()
    assert main([*common, "--model", str(tiny_llama), "--langs", "sw"]) == 2  # probed for zh, not sw
    assert "sw" in capsys.readouterr().err


def test_a_gguf_model_is_planned_from_its_key_values_without_converting(tiny_llama, parallel_data, tmp_path,
                                                                         monkeypatch):
    from gguf import GGMLQuantizationType as Q
    from transformers import AutoModelForCausalLM

    from tests.families.gguf_writer import write_gguf

    source = write_gguf(tiny_llama, tmp_path / "tiny.gguf", Q.F32)  # (loads the tiny model; the plan below may not)
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llama).parameters())

    def nothing(*_a, **_k):
        raise AssertionError("a dry run converted the GGUF")

    monkeypatch.setattr(models, "convert_gguf", nothing)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", nothing)
    cfg = load_config(None, {"model.gguf": str(source), "probe_data": str(parallel_data),
                             "train_data": str(parallel_data), "eval.enabled": False, "out": str(tmp_path / "o")})
    plan = plan_job(cfg)
    assert plan.family.parameters == params and plan.family.architecture == "LlamaForCausalLM"
    assert str(tmp_path / "o" / "model.gguf") in plan.outputs and plan.source.startswith("GGUF file")
