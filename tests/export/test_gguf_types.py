"""llama.cpp's type rules for the changed tensors of OUT/model.gguf, for every --gguf-out choice.

llama.cpp aborts at the first token when a norm weight is F16 (its element-wise ops take F32 operands only):
every 1-D tensor must come out F32 whatever was asked, and every type written must be one llama.cpp
multiplies with and that reads back (dequantised) as the trained tensor.
"""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, dequantize
from transformers import AutoModelForCausalLM
from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

from lensml.export.gguf import LLAMACPP_TYPES, TYPES, _to_gguf_layout, export_gguf, tensor_type
from lensml.export.gguf_file import GGUFFile, write_copy
from tests.families.gguf_writer import write_gguf

#: The 2-D type each choice must give the tiny model's matrices (rows of 32 and 64: whole blocks of every type),
#: and how close a dequantised tensor must be to the trained one (largest absolute error, weights of ~0.02-1).
MATRIX_TYPE = {"source": Q.Q4_1, "q8_0": Q.Q8_0, "f16": Q.F16, "f32": Q.F32}
TOLERANCE = {Q.Q4_1: 0.25, Q.Q8_0: 0.02, Q.F16: 1e-3, Q.F32: 0.0}


@pytest.fixture(scope="module")
def source_and_model(tmp_path_factory, tiny_llama):
    """A Q4_1 GGUF of the tiny llama whose 1-D tensors are F16 (a source that itself breaks llama.cpp's rule, so
    that `source` cannot pass by copying its norms' type), and the model with every tensor moved."""
    root = tmp_path_factory.mktemp("gguf-types")
    q41 = write_gguf(tiny_llama, root / "q41.gguf", Q.Q4_1)
    src = GGUFFile(q41)
    norms = {t.name: (np.frombuffer(src.data(t), dtype=np.float32).astype(np.float16).tobytes(), int(Q.F16))
             for t in src.tensors if len(t.dims) == 1}
    assert norms and all(t.type == Q.Q4_1 for t in src.tensors if len(t.dims) == 2)
    write_copy(src, root / "source.gguf", norms)
    src.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return root / "source.gguf", model


@pytest.mark.parametrize("choice", TYPES)
def test_every_choice_writes_1d_tensors_f32_and_types_llamacpp_reads(choice, source_and_model, tmp_path):
    source, model = source_and_model
    changed = [n for n, _ in model.named_parameters()]
    summary = export_gguf(model, source, tmp_path / "model.gguf", changed, choice)
    params = dict(model.named_parameters())
    hf_of = get_gguf_hf_weights_map(model, TensorProcessor(), model_type="llama")
    tensors = GGUFReader(str(tmp_path / "model.gguf")).tensors
    assert {t.name for t in tensors} == set(summary["replaced"])  # every tensor was changed, so every one checked
    one_d = [t for t in tensors if len(t.shape) == 1]
    assert len(one_d) == 2 * 4 + 1  # two norms a layer, four layers, and the final norm
    for t in tensors:
        assert summary["replaced"][t.name] == t.tensor_type.name
        assert t.tensor_type in LLAMACPP_TYPES, (t.name, t.tensor_type.name)
        assert t.tensor_type == (Q.F32 if len(t.shape) == 1 else MATRIX_TYPE[choice]), (t.name, t.tensor_type.name)
        # Readable: it dequantises back to the trained tensor (in llama.cpp's layout) within the type's error.
        want = _to_gguf_layout("llama", t.name, params[hf_of[t.name]].detach().numpy(), model.config)
        got = dequantize(t.data, t.tensor_type).reshape(want.shape)
        assert np.abs(got - want).max() <= TOLERANCE[t.tensor_type], (t.name, t.tensor_type.name)
    # and transformers' GGUF loader reads the whole file as the model (exactly so in F32)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 14, 20]])
    with torch.no_grad():
        diff = (back(ids).logits - model(ids).logits).abs().max().item()
    assert diff == 0.0 if choice == "f32" else diff < 1.0


@pytest.mark.parametrize("wanted", TYPES)
@pytest.mark.parametrize("source_type", [Q.F32, Q.F16, Q.BF16, Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K])
def test_type_rules(wanted, source_type):
    # 1-D tensors (norms, biases, rope factors) and the MoE router: F32 whatever was asked and whatever the source
    for name, shape in (("blk.0.attn_norm.weight", (64,)), ("blk.0.attn_q.bias", (64,)), ("rope_freqs.weight", (4,)),
                        ("blk.0.ffn_gate_inp.weight", (4, 64))):
        assert tensor_type(name, shape, source_type, wanted) == Q.F32, (name, wanted)
    matrix = tensor_type("blk.0.ffn_up.weight", (128, 64), source_type, wanted)
    assert matrix in LLAMACPP_TYPES
    if wanted == "source":
        # the source's own type where gguf-py writes it; K-quants (gguf-py 0.19 cannot quantise them) -> F16
        assert matrix == (Q.F16 if source_type in (Q.Q4_K, Q.Q6_K) else source_type)
    else:
        assert matrix == {"q8_0": Q.Q8_0, "f16": Q.F16, "f32": Q.F32}[wanted]
    # rows that do not fill whole blocks of a quantised type: F16, as llama.cpp's converter does
    odd = tensor_type("blk.0.ffn_up.weight", (128, 48), source_type, wanted)
    assert odd == (Q.F32 if wanted == "f32" or (wanted == "source" and source_type == Q.F32) else
                   Q.BF16 if wanted == "source" and source_type == Q.BF16 else Q.F16)


def test_real_moe_expert_tensor_names_find_their_parameter(tmp_path):
    """llama.cpp names Qwen3-MoE's experts blk.N.ffn_gate_exps.weight; transformers' map has them without the suffix.
    Without the lookup below, a changed expert tensor of a real file would be reported as absent from it."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS

    from lensml.export.gguf import hf_name
    from tests.helpers import build_tiny_model

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "moe", "qwen3_moe"), dtype=torch.float32)
    processor = TENSOR_PROCESSORS["qwen3moe"](config=model.config.to_dict())
    hf_of = get_gguf_hf_weights_map(model, processor, model_type="qwen3moe")
    fused = "model.layers.1.mlp.experts.gate_up_proj"
    assert hf_name(hf_of, "blk.1.ffn_gate_exps.weight") == hf_name(hf_of, "blk.1.ffn_up_exps.weight") == fused
    assert hf_name(hf_of, "blk.1.ffn_down_exps.weight") == "model.layers.1.mlp.experts.down_proj"
    assert hf_name(hf_of, "blk.1.ffn_norm.weight") == "model.layers.1.post_attention_layernorm.weight"
    assert hf_name(hf_of, "blk.1.attn_norm.bias") is None  # no such parameter: still nothing
    # and under its real name the fused tensor is split in llama.cpp's two halves, gate first
    w = dict(model.named_parameters())[fused].detach().numpy()
    gate = _to_gguf_layout("qwen3moe", "blk.1.ffn_gate_exps.weight", w, model.config)
    up = _to_gguf_layout("qwen3moe", "blk.1.ffn_up_exps.weight", w, model.config)
    assert gate.shape == up.shape == (w.shape[0], w.shape[1] // 2, w.shape[2])
    assert np.array_equal(np.concatenate([gate, up], axis=1), w)
