"""OUT/model.gguf: the source GGUF with only the changed tensors replaced, readable by transformers' loader."""

import numpy as np
import pytest
import torch

from lensml.export.gguf import export_gguf
from lensml.runtime.models import ModelConfig, load_model, packaged_gguf


@pytest.fixture(scope="module")
def changed_model(tmp_path_factory):
    """The packaged SmolLM2 (a real Q4_1 GGUF) with its top two layers moved, as training would."""
    import os
    os.environ["LENSML_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    model, tok, _ = load_model(ModelConfig(device="cpu"))
    names = [n for n, _ in model.named_parameters() if n.startswith(("model.layers.28.", "model.layers.29."))]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in names:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model, tok, names


def test_requantised_gguf_reads_back_as_the_enhanced_model(changed_model, tmp_path):
    from gguf import GGUFReader, dequantize, quantize
    from transformers import AutoModelForCausalLM

    model, tok, names = changed_model
    src = packaged_gguf("smollm2-135m-instruct")
    summary = export_gguf(model, src, tmp_path / "model.gguf", names, "source")
    assert len(summary["replaced"]) == len(names) and set(summary["replaced"].values()) == {"Q4_1", "F32"}
    # Untouched tensors and every key-value are carried over byte for byte.
    before, after = GGUFReader(str(src)), GGUFReader(str(tmp_path / "model.gguf"))
    assert [t.name for t in before.tensors] == [t.name for t in after.tensors]
    kept = [(a, b) for a, b in zip(before.tensors, after.tensors) if a.name not in summary["replaced"]]
    assert len(kept) == len(before.tensors) - len(names)
    assert all(a.tensor_type == b.tensor_type and np.array_equal(a.data, b.data) for a, b in kept)
    for key, field in before.fields.items():
        if not key.startswith("GGUF."):
            assert after.fields[key].contents() == field.contents(), key
    # transformers' own loader reads it; the logits equal the enhanced model's after the same quantisation
    # round trip of the changed layers (that round trip is the only difference, measured: < 1e-3).
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32)
    expected = {}
    gguf_names = _gguf_names(back)
    by_name = {t.name: t for t in before.tensors}
    for name, p in model.named_parameters():
        if name in names and p.dim() == 2:
            t = by_name[gguf_names[name]]
            q = quantize(p.detach().numpy(), t.tensor_type)
            expected[name] = torch.from_numpy(dequantize(q, t.tensor_type).reshape(p.shape).copy())
    ids = tok("Why is the sky blue? Because", return_tensors="pt").input_ids
    with torch.no_grad():
        got = back(ids).logits
        originals = {n: p.detach().clone() for n, p in model.named_parameters() if n in expected}
        params = dict(model.named_parameters())
        for n, w in expected.items():
            _copy_back(params[n], w, n, model.config)
        want = model(ids).logits
        for n, w in originals.items():
            params[n].copy_(w)
    assert (got - want).abs().max().item() < 1e-3


def _gguf_names(model) -> dict:
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map
    return {v: k for k, v in get_gguf_hf_weights_map(model, TensorProcessor()).items()}


def _copy_back(param, dequantised, name, config):
    """Quantisation blocks run along rows, and llama.cpp's Q/K permutation only reorders rows, so the round
    trip can be taken in HF layout directly."""
    param.copy_(dequantised)


def test_f32_export_is_exact(changed_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok, names = changed_model
    export_gguf(model, packaged_gguf("smollm2-135m-instruct"), tmp_path / "model.gguf", names, "f32")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32)
    ids = tok("Habari ya asubuhi", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)
