"""lensml.export.gguf._to_gguf_layout, tensor by tensor: each family's layout is the exact inverse of what
transformers' GGUF loader does to the stored tensor (so OUT/model.gguf reads back as the trained model)."""

from types import SimpleNamespace

import numpy as np
import pytest
from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

from lensml.export.gguf import _to_gguf_layout

CONFIG = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2)
RNG = np.random.default_rng(0)
NORMS = ["blk.3.attn_norm.weight", "blk.3.ffn_norm.weight", "blk.3.post_attention_norm.weight",
         "blk.3.attn_q_norm.weight", "output_norm.weight"]


def loaded(arch: str, name: str, stored: np.ndarray) -> np.ndarray:
    """What transformers' GGUF loader makes of a stored tensor."""
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=vars(CONFIG))
    return processor.process(stored, name).weights


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_gemma_norms_get_their_plus_one_back(arch):
    w = RNG.standard_normal(8).astype(np.float32)
    for name in NORMS:
        out = _to_gguf_layout(arch, name, w, CONFIG)
        assert np.array_equal(out, w + 1), name  # llama.cpp stores Gemma's norm weights as 1 + w
        assert np.allclose(loaded(arch, name, out), w, rtol=0, atol=1e-6), name  # (w + 1) - 1, float32 rounding
    up = RNG.standard_normal((6, 8)).astype(np.float32)
    assert np.array_equal(_to_gguf_layout(arch, "blk.3.ffn_up.weight", up, CONFIG), up)  # other tensors as they are


def test_llama_qk_rows_are_permuted_back_and_norms_left_alone():
    q = RNG.standard_normal((4 * 8, 32)).astype(np.float32)   # 4 heads of 8
    k = RNG.standard_normal((2 * 8, 32)).astype(np.float32)   # 2 key-value heads
    for name, w in (("blk.0.attn_q.weight", q), ("blk.0.attn_k.weight", k)):
        stored = _to_gguf_layout("llama", name, w, CONFIG)
        assert not np.array_equal(stored, w) and np.array_equal(loaded("llama", name, stored), w), name
    norm = RNG.standard_normal(32).astype(np.float32)
    assert np.array_equal(_to_gguf_layout("llama", "blk.0.attn_norm.weight", norm, CONFIG), norm)
