"""A family lensml cannot train is refused in one line, from its config, before any weight or tokenizer loads."""

from __future__ import annotations

import json
import logging

import gguf
import pytest

from lensml.cli import main
from lensml.errors import LensError
from lensml.runtime import models
from lensml.runtime.families import TESTED, check_family, read_config
from lensml.runtime.models import ModelConfig, load_model
from tests.families.conftest import FAMILIES


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a tokenizer or weights fails the test: the check must come first."""
    def refuse(*_a, **_k):
        raise AssertionError("loaded before the family was checked")
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)


def _checkpoint(tmp_path, config: dict):
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("config, needle", [
    ({"model_type": "my_own_lm", "hidden_size": 16}, "model type transformers .* does not know: pass --trust-remote-code"),
    ({"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2, "vocab_size": 64, "state_size": 4},
     r"\(MambaForCausalLM\) has no decoder with .layers and .norm"),
    ({"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2},
     "model_type vit, .* has no causal LM class"),
])
def test_an_unusable_family_is_refused_before_loading(tmp_path, config, needle, no_loading):
    path = _checkpoint(tmp_path, config)
    with pytest.raises(LensError, match=needle) as err:
        load_model(ModelConfig(model=str(path)))
    assert "\n" not in str(err.value)


def test_the_command_line_says_it_in_one_line_and_writes_nothing(tmp_path, no_loading, capsys):
    (tmp_path / "m").mkdir()
    path = _checkpoint(tmp_path / "m", {"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2,
                                         "vocab_size": 64, "state_size": 4})
    out = tmp_path / "out"
    assert main(["run", "--model", str(path), "--out", str(out), "--eval.no-enabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model") and "MambaForCausalLM" in err[0]
    assert not out.exists()


def test_a_gguf_architecture_transformers_cannot_read_is_refused_before_converting(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "convert_gguf", lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted")))
    w = gguf.GGUFWriter(str(tmp_path / "olmo.gguf"), "olmo2")
    w.add_block_count(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(LensError, match="GGUF architecture 'olmo2' .* is not one transformers .* reads from GGUF: "
                                        "pass the original checkpoint"):
        load_model(ModelConfig(gguf=str(tmp_path / "olmo.gguf")))


def test_every_family_of_the_matrix_is_known_and_counted_without_weights(family_models, caplog):
    """The matrix's families pass the check quietly, and the parameter count from the meta-device build is the
    loaded model's (what the size defaults read)."""
    from transformers import AutoModelForCausalLM

    for name in ("phi3", "qwen3_moe", "gemma2"):
        path = family_models(name)
        with caplog.at_level(logging.WARNING, logger="lensml.runtime.families"):
            family = check_family(read_config(str(path)), name)
        assert family.tested and not [r for r in caplog.records if r.name.startswith("lensml")]
        loaded = AutoModelForCausalLM.from_pretrained(path)
        assert family.parameters == sum(p.numel() for p in loaded.parameters())
        assert family.layers == loaded.config.num_hidden_layers
    assert {"phi3", "qwen3_moe", "gemma2", "granite", "olmo2"} <= set(TESTED)
    assert len(FAMILIES) >= 11


def test_an_untested_family_with_the_structure_runs_with_a_warning(tmp_path, caplog):
    from transformers import Starcoder2Config

    Starcoder2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, vocab_size=64).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lensml.runtime.families"):
        family = check_family(read_config(str(tmp_path)), "sc2")
    assert not family.tested and family.architecture == "Starcoder2ForCausalLM" and family.layers == 2
    assert "starcoder2 is not among the families" in caplog.text
