"""Norm weights and biases take no weight decay, for every training method (the HF Trainer's convention)."""

import pytest
import torch

from lensml import methods
from lensml.data.loaders import load_rows
from lensml.methods.base import MethodInputs
from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.optim import make_optimizer, no_decay_names, param_groups
from lensml.training import TrainConfig
from tests.helpers import write_parallel_data


def _load(path):
    model, tok, _ = load_model(ModelConfig(model=str(path)))
    return model, tok


def test_groups_of_llama_and_gemma3(tiny_llama, tiny_gemma3):
    llama, _ = _load(tiny_llama)
    names = {n for n, _ in llama.named_parameters()}
    norms = {n for n in names if n.endswith(("input_layernorm.weight", "post_attention_layernorm.weight"))}
    assert no_decay_names(llama) == norms | {"model.norm.weight"} and len(norms) == 8
    groups = param_groups(llama, list(llama.parameters()), 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    by_id = {id(p): n for n, p in llama.named_parameters()}
    assert {by_id[id(p)] for p in groups[1]["params"]} == norms | {"model.norm.weight"}
    assert {by_id[id(p)] for p in groups[0]["params"]} == names - norms - {"model.norm.weight"}
    gemma, _ = _load(tiny_gemma3)
    skip = no_decay_names(gemma)  # q_norm / k_norm and the four norms around each layer, by class and by name
    assert {n.split(".")[-2] for n in skip} == {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                                                "post_feedforward_layernorm", "q_norm", "k_norm", "norm"}
    # Biases by name, LayerNorm modules by type (GPT-2 style names that say neither).
    toy = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    assert no_decay_names(toy) == {"0.bias", "1.weight", "1.bias"}
    top = [p for n, p in llama.named_parameters() if n.startswith("model.layers.3.")]
    opt = make_optimizer(param_groups(llama, top, 0.1), 1e-3, 0.1)
    assert [len(g["params"]) for g in opt.param_groups] == [7, 2] and opt.param_groups[1]["weight_decay"] == 0.0
    bf16 = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert type(make_optimizer(param_groups(bf16, list(bf16.parameters()), 0.1), 1e-3, 0.1)).__name__ == \
        "LowPrecisionAdamW"


@pytest.mark.parametrize("name", ["lens", "xsft", "xsft-top"])
def test_every_method_leaves_norms_undecayed(name, tiny_llama, tmp_path, monkeypatch):
    """Each method's optimiser holds the norms it trains in a group of their own, without weight decay."""
    from lensml import training
    from lensml.lens.probing import ProbeConfig, probe

    seen = []
    real = training.make_optimizer

    def spy(groups, lr, wd, seed=0):
        seen.append([(len(g["params"]), g["weight_decay"]) for g in groups])
        return real(groups, lr, wd, seed)

    monkeypatch.setattr(training, "make_optimizer", spy)
    model, tok = _load(tiny_llama)
    data = write_parallel_data(tmp_path / "qa.jsonl", langs=("en", "zh"), repeat=1, responses=True)
    rows = load_rows(str(data), ["en", "zh"], responses=["en", "zh"])
    sub = probe(model, tok, {lang: [r[lang] for r in rows] for lang in ("en", "zh")}, "en", ProbeConfig()) \
        if name == "lens" else None
    inputs = MethodInputs(rows, ["en", "zh"], "en", sub, None, [r["responses"] for r in rows])
    result = methods.get(name).train(model, tok, inputs, TrainConfig(lr=1e-2, batch_size=8, weight_decay=0.1))
    trained_norms = 4 if name in ("lens", "xsft-top") else 9  # the top 2 layers' two norms each, or all 8 + the final one
    assert seen[0][-1] == (trained_norms, 0.0) and seen[0][0][1] == 0.1
    assert result.resolved["no_weight_decay"] == 32 * trained_norms  # hidden size 32
