"""configs/paper/*.yaml: the LENS paper's settings parse, and resolve against each model's shape (built from a
transformers config object: nothing is downloaded) to the layers, rank, rate and steps the paper trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import LlamaConfig, Phi3Config

from lensml.recipes.config import load_config
from lensml.recipes.plan import plan_job

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "paper"
MULTI = ["zh", "ja", "ko", "ar", "bn", "sw"]

LLAMA3 = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
          "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
          "max_position_embeddings": 8192, "rope_theta": 500000.0}
SHAPES = {
    "llama3_8b_instruct.yaml": ("meta-llama/Meta-Llama-3-8B-Instruct", LlamaConfig(**LLAMA3), 8_030_261_248),
    "llama3.1_8b_instruct.yaml": ("meta-llama/Llama-3.1-8B-Instruct", LlamaConfig(**{
        **LLAMA3, "max_position_embeddings": 131072, "rope_parameters": {
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}), 8_030_261_248),
    # Phi-3.5-mini's shape; its 48 LongRoPE factors per set do not enter the plan, so all are 1 here.
    "phi3.5_mini_instruct.yaml": ("microsoft/Phi-3.5-mini-instruct", Phi3Config(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        vocab_size=32064, max_position_embeddings=131072, original_max_position_embeddings=4096,
        tie_word_embeddings=False, rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                    "short_factor": [1.0] * 48, "long_factor": [1.0] * 48}),
        3_821_079_552),
}
OFFICIAL = ROOT.parent / "shared" / "data" / "lens-official"


def test_every_paper_config_is_tested():
    assert sorted(p.name for p in PAPER.glob("*.yaml")) == sorted(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_paper_settings_parse(name):
    cfg = load_config(str(PAPER / name), {})
    model, _, _ = SHAPES[name]
    assert cfg.model.model == model and cfg.model.dtype == "bfloat16" and cfg.method == "lens"
    assert cfg.langs == MULTI and cfg.central == "en"
    t = cfg.train
    assert (t.lr, t.epochs, t.warmup_ratio, t.batch_size, t.weight_decay, t.start_layer) == (1e-5, 1, 0.05, 8, 0.1, -2)
    assert (t.loss.lambda1, t.loss.lambda3, t.loss.retain, t.loss.reduction) == (1.0, 1.0, "mean", "mean")
    assert t.loss.lambdas == {} and t.samples == 200 and t.max_length == 128
    assert cfg.probe.rank is None and cfg.probe.samples == 300 and cfg.probe.max_length == 64
    assert cfg.probe_data.endswith("probe_aya_7lang_300.jsonl")
    assert cfg.train_data.endswith("manipulation_alpaca_safe_200.json")


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="the LENS authors' data in ../shared are not here")
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_paper_settings_resolve_against_the_models_shape(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name ../shared from the repository root
    _, shape, parameters = SHAPES[name]
    for langs, probe_data, rank in ((MULTI, None, 6), (["zh"], str(OFFICIAL / "probe_aya_en_zh_300.jsonl"), 1)):
        overrides = {"out": str(tmp_path / f"out-{len(langs)}"), "langs": ",".join(langs), "eval.enabled": False}
        if probe_data:
            overrides["probe_data"] = probe_data
        plan = plan_job(load_config(str(PAPER / name), overrides), config=shape)
        assert plan.family.parameters == parameters and plan.family.layers == 32
        assert plan.trained_layers == [30, 31] and plan.rank == rank  # r = L - 1
        assert plan.resolved.train.lr == 1e-5 and plan.steps == 25  # 200 prompts, batch 8, one epoch
        assert plan.data["probe"].count(" 300") == len(langs) + 1
    if name.startswith("llama3"):
        assert 0.0542 < plan.trainable_share < 0.0545  # the paper's Table 5: 5.43% of Llama-3-8B
