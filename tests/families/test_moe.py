"""The methods that train weights, on a mixture of experts (the tiny Qwen3-MoE: 4 experts, 2 a token, every
layer sparse): each run's manifest says which experts and routers it trained, and those are what changed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lensml.cli import main
from tests.helpers import write_parallel_data


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    return write_parallel_data(tmp_path_factory.mktemp("moe-qa") / "qa.jsonl", repeat=1, responses=True)


@pytest.mark.parametrize("method, layers", [("lens", [2, 3]), ("xsft", [2, 3]), ("xsft-full", [0, 1, 2, 3])])
def test_the_manifest_names_the_trained_experts_and_routers(method, layers, family_models, qa_data, tmp_path):
    path = family_models("qwen3_moe")
    out = tmp_path / method
    start = [] if method != "xsft" else ["--start-layer", "-2"]  # xsft on LENS's two layers; xsft-full on all
    assert main(["run", "--model", str(path), "--probe-data", str(qa_data), "--train-data", str(qa_data),
                 "--langs", "zh", "--lr", "1e-2", "--method", method, "--eval.no-enabled", *start,
                 "--out", str(out)]) == 0
    experts = json.loads((out / "manifest.json").read_text())["experts"]
    assert experts["num_experts"] == 4 and experts["fused"]
    assert sorted(int(k) for k in experts["layers"]) == layers
    assert experts["untrained_layers"] == [i for i in range(4) if i not in layers]
    for i in layers:
        entry = experts["layers"][str(i)]
        assert entry["experts"] == [0, 1, 2, 3] and entry["router"] == [f"model.layers.{i}.mlp.gate.weight"]
        assert entry["expert_parameters"] == [f"model.layers.{i}.mlp.experts.down_proj",
                                              f"model.layers.{i}.mlp.experts.gate_up_proj"]
    # What the manifest says was trained is what the patch changed: every router and expert tensor of those layers,
    # and nothing of the layers it calls untrained.
    changed = set(json.loads((out / "patch" / "patch_config.json").read_text())["tensors"])
    named = {n for i in layers for e in (experts["layers"][str(i)],) for n in e["expert_parameters"] + e["router"]}
    assert named <= changed
    assert not any(f"layers.{i}." in n for i in experts["untrained_layers"] for n in changed)
    patch = load_file(out / "patch" / "patch.safetensors")
    assert all(patch[n].dim() == 3 for n in named if "experts" in n)
    assert torch.isfinite(torch.cat([t.flatten() for t in patch.values()])).all()
