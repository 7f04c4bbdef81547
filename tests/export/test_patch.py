"""The LENS patch: the changed tensors only, applied bit for bit, refused on other weights."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lensml.cli import main
from lensml.errors import LensError
from lensml.export.patch import apply_patch, fingerprint
from tests.recipes.test_run import common


@pytest.fixture(scope="module")
def trained_run(tiny_llama, parallel_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("patch") / "run"
    assert main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--eval.no-enabled"]) == 0
    return out


def test_patch_holds_only_the_changed_tensors(trained_run, tiny_llama):
    cfg = json.loads((trained_run / "patch" / "patch_config.json").read_text())
    tensors = load_file(trained_run / "patch" / "patch.safetensors")
    assert sorted(tensors) == cfg["tensors"] and cfg["layers"] == [2, 3] and cfg["method"] == "lens"
    assert all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in tensors)
    assert cfg["base_model"] == str(tiny_llama)
    base = load_file(tiny_llama / "model.safetensors")
    assert cfg["base_fingerprint"] == fingerprint({k: base[k] for k in tensors})


def test_apply_gives_the_runs_model_bit_for_bit(trained_run, tiny_llama, tmp_path):
    out = tmp_path / "applied"
    assert main(["apply", str(trained_run / "patch"), "--out", str(out)]) == 0  # base found in the patch
    applied, saved = load_file(out / "model.safetensors"), load_file(trained_run / "model" / "model.safetensors")
    assert sorted(applied) == sorted(saved) and all(torch.equal(applied[k], saved[k]) for k in saved)
    # The three lines of plain transformers + safetensors, for users without lensml.
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.load_state_dict(load_file(trained_run / "patch" / "patch.safetensors"), strict=False)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items() if k in saved)


def test_a_different_base_is_refused(trained_run, tiny_gemma3, tiny_llama, tmp_path, capsys):
    from lensml.runtime.models import ModelConfig, load_model

    model, _, _ = load_model(ModelConfig(model=str(tiny_llama)))
    with torch.no_grad():
        model.model.layers[3].mlp.up_proj.weight.add_(1e-3)
    with pytest.raises(LensError, match="not the base this patch was made on"):
        apply_patch(model, trained_run)
    assert main(["apply", str(trained_run / "patch"), "--base", str(tiny_gemma3), "--out", str(tmp_path / "x")]) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_patch_of_an_8b_model_is_about_five_percent():
    """Llama-3-8B shapes, top two of 32 layers (the LENS setting): computed from the config, nothing built."""
    from transformers import LlamaConfig

    c = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
    kv = c.hidden_size // c.num_attention_heads * c.num_key_value_heads
    layer = (2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size
             + 2 * c.hidden_size)
    total = 32 * layer + 2 * c.vocab_size * c.hidden_size + c.hidden_size
    assert 0.050 < 2 * layer / total < 0.056  # the paper's Table 5: 5.43%


def test_model_card(trained_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(trained_run / "model" / "README.md")
    meta = card.data.to_dict()
    assert meta["language"] == ["en", "zh", "sw"] and meta["library_name"] == "transformers"
    assert "lensml" in meta["tags"] and "base_model" not in meta  # a local base is not a Hub id
    assert "Trained 3 optimiser steps" in card.text and "% of the parameters" in card.text


def test_push_to_an_unreachable_hub_fails_before_any_work(tiny_llama, parallel_data, tmp_path, monkeypatch, capsys):
    import socket

    import lensml.recipes.run as recipe

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(recipe, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    out = tmp_path / "run"
    assert main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--push-to-hub", "me/model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot push to me/model") and "hf_test_token" not in err
    assert not out.exists()


def test_the_fingerprint_tells_dtypes_apart():
    """The same bytes as float16 and as bfloat16 are different weights: a patch made on one is refused on the other."""
    bits = torch.tensor([15360, -17408, 1, 0], dtype=torch.int16)
    half, brain = bits.view(torch.float16), bits.view(torch.bfloat16)
    assert half.view(torch.int16).equal(brain.view(torch.int16))  # byte for byte the same
    assert fingerprint({"w": half}) != fingerprint({"w": brain})
    assert fingerprint({"w": half}) == fingerprint({"w": half.clone()})
    assert fingerprint({"w": half}) != fingerprint({"v": half})  # and names count
    assert fingerprint({"w": half}) != fingerprint({"w": half.reshape(2, 2)})  # and shapes
