"""OUT/Modelfile beside OUT/model.gguf: ollama's Go template only where it renders as the GGUF's Jinja one does."""

import torch
from transformers import AutoModelForCausalLM

from lensml.export.modelfile import CHATML_GO, _chatml, chatml_system, modelfile_text
from lensml.recipes.config import RunConfig
from lensml.recipes.stages import write_gguf
from lensml.results.rundir import RunDir
from lensml.runtime.models import ModelConfig, packaged_gguf
from tests.families.gguf_writer import write_gguf as write_tiny_gguf
from tests.helpers import CHAT_TEMPLATE, FAMILY_TEMPLATES, build_tiny_model

SPECIAL = {"bos_token": "<s>", "eos_token": "<|im_end|>"}


def test_chatml_templates_are_recognised_with_their_default_system_prompt():
    assert chatml_system(FAMILY_TEMPLATES["qwen2"][0], SPECIAL) == (True, "You are a helpful assistant.")
    assert chatml_system(FAMILY_TEMPLATES["qwen3"][0], SPECIAL) == (True, None)
    # not ChatML as ollama would render it: other turn markers, a system role refused, a BOS written by the template
    for family in ("gemma", "mistral", "phi3", "llama3.1", "granite"):
        assert chatml_system(FAMILY_TEMPLATES[family][0], SPECIAL) == (False, None), family
    assert chatml_system(CHAT_TEMPLATE, SPECIAL) == (False, None)
    assert chatml_system(None, SPECIAL) == (False, None)
    # one character off anywhere (here: no newline after the last turn) and it is not taken as ChatML
    assert chatml_system(FAMILY_TEMPLATES["qwen3"][0].replace("<|im_end|>\n{% endfor %}", "<|im_end|>{% endfor %}"),
                         SPECIAL) == (False, None)
    assert _chatml([{"role": "user", "content": "Hi"}]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_default_model_modelfile_has_its_chatml_template_and_system_prompt():
    text = modelfile_text(packaged_gguf("smollm2-135m-instruct"))
    assert "FROM ./SmolLM2-135M-Instruct.Q4_1.gguf\n" in text
    assert f'TEMPLATE """{CHATML_GO}"""\n' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""\n' in text
    assert 'PARAMETER stop "<|im_end|>"\n' in text


def test_the_run_writes_the_modelfile_beside_the_gguf(tmp_path):
    # The tiny llama's template writes a BOS itself: not ChatML as ollama renders it, so FROM and the stop token only.
    folder = build_tiny_model(tmp_path / "tiny", "llama")
    source = write_tiny_gguf(folder, tmp_path / "tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    run = RunDir(tmp_path / "out")
    run.path.mkdir()
    names = ["model.layers.3.mlp.up_proj.weight", "model.layers.3.post_attention_layernorm.weight"]
    summary = write_gguf(RunConfig(model=ModelConfig(gguf=str(source))), model, run, {"tensors": names})
    assert summary["type"] == "q8_0" and set(summary["replaced"].values()) == {"Q8_0", "F32"}
    text = (run.path / "Modelfile").read_text(encoding="utf-8")
    assert text.splitlines()[1:] == ["FROM ./model.gguf",
                                     "# No Go template: ollama takes one from the GGUF's chat template by likeness.",
                                     'PARAMETER stop "<|im_end|>"']
    assert "TEMPLATE" not in text
    # no GGUF, no Modelfile
    other = RunDir(tmp_path / "none")
    other.path.mkdir()
    assert write_gguf(RunConfig(model=ModelConfig(gguf=str(source)), gguf_out="none"), model, other,
                      {"tensors": names}) is None
    assert not (other.path / "Modelfile").exists()
