"""Every family: `lens run` saves a checkpoint that plain transformers reloads with the trained logits, and
`lens apply` of its patch gives that checkpoint bit for bit."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lensml.cli import main


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_run_saves_reloads_and_applies(family, parallel_data, tmp_path):
    name, path = family
    out = tmp_path / "run"
    assert main(["run", "--model", str(path), "--probe-data", str(parallel_data), "--train-data", str(parallel_data),
                 "--langs", "zh,sw", "--lr", "1e-2", "--train-samples", "8", "--eval.no-enabled",
                 "--out", str(out)]) == 0
    patch_cfg = json.loads((out / "patch" / "patch_config.json").read_text())
    n = json.loads((path / "config.json").read_text())["num_hidden_layers"]
    assert patch_cfg["layers"] == [n - 2, n - 1] and patch_cfg["tensors"], name
    saved = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    originals = {k: v.clone() for k, v in base.state_dict().items()}
    ids = torch.tensor([saved.config.bos_token_id or 1, *range(10, 40)])[None]
    assert not torch.equal(_logits(saved, ids), _logits(base, ids)), name  # training moved the answers
    # The patch applied with plain transformers + safetensors gives the saved checkpoint's logits exactly.
    _missing, unexpected = base.load_state_dict(load_file(out / "patch" / "patch.safetensors"), strict=False)
    assert not unexpected, (name, unexpected)
    assert torch.equal(_logits(saved, ids), _logits(base, ids)), name
    changed = [k for k, v in saved.state_dict().items() if not torch.equal(v, originals[k])]
    assert changed and all(f"layers.{n - 2}." in k or f"layers.{n - 1}." in k for k in changed), (name, changed)
    # lens apply: base (named in the patch) + patch -> the run's checkpoint, bit for bit.
    assert main(["apply", str(out / "patch"), "--out", str(tmp_path / "applied")]) == 0
    applied, kept = load_file(tmp_path / "applied" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert sorted(applied) == sorted(kept) and all(torch.equal(applied[k], kept[k]) for k in kept), name
