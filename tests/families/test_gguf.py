"""GGUF in and out for every family both gguf-py and transformers' GGUF loader read: a tiny model written as
llama.cpp writes it, loaded by lensml (the same model), trained by `lens run`, and OUT/model.gguf read back by
transformers with the logits of OUT/model."""

from __future__ import annotations

import json

import pytest
import torch
from gguf import GGMLQuantizationType as Q
from transformers import AutoConfig, AutoModelForCausalLM

from lensml.cli import main
from lensml.runtime.models import ModelConfig, load_model
from tests.families.gguf_writer import write_gguf
from tests.helpers import build_tokenizer

# What a GGUF file can say, per family (llama.cpp writes no sliding window for Mistral and no layer pattern for
# Gemma-3 but its own; transformers reads Qwen3's head_dim and Qwen3-MoE's expert width from its defaults).
GGUF_SHAPES = {
    "llama": {}, "llama3.1": {}, "phi3": {}, "qwen2": {}, "gemma2": {},
    "mistral": {"sliding_window": 4096},
    "qwen3": {"head_dim": 128},
    "gemma3": {"query_pre_attn_scalar": 8, "layer_types": None, "sliding_window": 6},
    "qwen3_moe": {"moe_intermediate_size": 768},
}
RESTORED = ("phi3", "llama3.1", "gemma2", "gemma3")  # lensml.runtime.gguf_config rebuilds part of their config
# Qwen2 comes in quantised (Q8_0), the others in F32 (exact comparisons: on random weights LongRoPE moves the tiny
# Phi-3's logits by only 1e-3, less than Q8_0's error).
MATRICES = {"qwen2": Q.Q8_0}


def _gguf_shaped(family_models, family: str, root):
    """The family's tiny model with only what a GGUF carries (GGUF_SHAPES), and its GGUF file."""
    src = family_models(family)
    overrides = GGUF_SHAPES[family]
    if not overrides:
        return src, write_gguf(src, root / f"{family}.gguf", MATRICES.get(family, Q.F32))
    config = AutoConfig.from_pretrained(src)
    for k, v in overrides.items():
        setattr(config, k, v)
    if family == "gemma3":
        config.layer_types = [("full_attention" if (i + 1) % 6 == 0 else "sliding_attention")
                              for i in range(config.num_hidden_layers)]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(root / family)
    if family == "gemma3":  # Gemma's own template and tokens (its tokenizer class needs an <unk>)
        build_tokenizer(root / family, "gemma")
    else:
        for f in src.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                (root / family / f.name).write_bytes(f.read_bytes())
    return root / family, write_gguf(root / family, root / f"{family}.gguf", MATRICES.get(family, Q.F32))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("family", list(GGUF_SHAPES))
def test_gguf_in_trained_and_out(family, family_models, parallel_data, tmp_path):
    hf_dir, source = _gguf_shaped(family_models, family, tmp_path)
    ids = torch.tensor([[2, *range(10, 50)]])  # 41 tokens: past Gemma-3's window
    original = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    # lensml's loader reads the file as the model it was written from (LongRoPE, rope_freqs and the query scale
    # restored from what transformers' loader leaves out); Q8_0 weights only to their quantisation error.
    loaded, _, _ = load_model(ModelConfig(gguf=str(source)))
    tol = 5e-3 if family in MATRICES else 1e-5
    torch.testing.assert_close(_logits(loaded, ids), _logits(original, ids), rtol=0, atol=tol)
    out = tmp_path / "run"
    assert main(["run", "--gguf", str(source), "--probe-data", str(parallel_data), "--train-data", str(parallel_data),
                 "--langs", "zh", "--lr", "1e-2", "--train-samples", "8", "--eval.no-enabled", "--gguf-out", "f32",
                 "--out", str(out)]) == 0
    replaced = json.loads((out / "patch" / "patch_config.json").read_text())["tensors"]
    trained = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    assert not torch.equal(_logits(trained, ids), _logits(loaded, ids)) and replaced
    # transformers reads OUT/model.gguf with OUT/model's logits: the changed tensors written in llama.cpp's layout
    # (fused, permuted, split or offset as each family needs), the rest as they were. Families with config the file
    # holds where transformers' loader does not look (rope tensors, Gemma's soft-caps and query scale; tiny Gemmas
    # differ from its defaults) are read with OUT/model's config, which is what lensml's loader rebuilds.
    own_config = {"config": AutoConfig.from_pretrained(out / "model")} if family in RESTORED else {}
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32, **own_config)
    torch.testing.assert_close(_logits(back, ids), _logits(trained, ids), rtol=0, atol=1e-5)
    again, _, _ = load_model(ModelConfig(gguf=str(out / "model.gguf")))  # and lensml's loader, config and all
    torch.testing.assert_close(_logits(again, ids), _logits(trained, ids), rtol=0, atol=1e-5)
