"""Random-weight Llama models of real shapes, built on the device from a config: what a machine without
the Hub (the lent GPU, which takes at most 64 MiB of files) can time. The one home of the shapes the
benchmarks use.

Speed does not depend on the weights' values, only on shapes, dtype and sequence lengths, so a random
Llama-3-8B-shaped model times what the real one would (its answers are noise: their length is what counts).
A shape without its own vocabulary takes the tokenizer's; llama3-8b keeps Llama-3's 128256 ids, so its LM
head costs what the real one does (ids past the tokenizer's decode to nothing).
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),  # CPU dry runs
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, tie_word_embeddings=True),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
                      tie_word_embeddings=False),
}
SHAPES["8b"] = SHAPES["llama3-8b"]  # the name older commands used


def shape_config(name: str, tok, scale: int = 1):
    """The LlamaConfig of a named shape for this tokenizer; scale > 1 divides widths and depth (dry runs of a
    big shape's code path on a small machine; head width stays)."""
    shape = dict(SHAPES[name])
    if scale > 1:
        heads = max(1, shape["num_attention_heads"] // scale)
        kv = max(1, shape["num_key_value_heads"] // scale)
        shape.update(hidden_size=heads * (shape["hidden_size"] // shape["num_attention_heads"]),
                     intermediate_size=max(16, shape["intermediate_size"] // scale),
                     num_hidden_layers=max(4, shape["num_hidden_layers"] // scale),
                     num_attention_heads=heads, num_key_value_heads=kv if heads % kv == 0 else 1)
    shape.setdefault("vocab_size", len(tok))
    shape.setdefault("max_position_embeddings", 4096)
    if len(tok) > shape["vocab_size"]:
        raise SystemExit(f"the tokenizer has {len(tok)} ids, the {name} shape's vocabulary {shape['vocab_size']}")
    return LlamaConfig(**shape, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)


def random_llama(name: str, tok, device, dtype=torch.bfloat16, scale: int = 1, seed: int = 0):
    """A LlamaForCausalLM of the named shape with random weights, built directly on the device, in eval mode."""
    cfg = shape_config(name, tok, scale)
    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM._from_config(cfg, dtype=dtype).eval()
