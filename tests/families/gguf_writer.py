"""A tiny HF checkpoint written as llama.cpp's convert_hf_to_gguf.py writes that family (for the GGUF tests).

Key-values, the byte-level tokenizer, and the tensors in llama.cpp's layout (lensml.export.gguf._to_gguf_layout,
whose inverse is transformers' GGUF loader: the tests read each file back through that loader and compare logits,
so a wrong layout here or there fails them), plus what llama.cpp adds beside the weights: Phi-3's LongRoPE factor
tensors and Llama-3's rope_freqs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

from lensml.export.gguf import _to_gguf_layout

ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe",
        "phi3": "phi3", "gemma2": "gemma2", "gemma3_text": "gemma3"}


def _rope(config) -> dict:
    return getattr(config, "rope_parameters", None) or {}


def _llama3_factors(config, head_dim: int) -> list[float]:
    """llama.cpp's rope_freqs for a "llama3" rope scaling (LlamaModel.generate_extra_tensors)."""
    rope = _rope(config)
    base, factor = rope["rope_theta"], rope["factor"]
    low, high, old = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
    out = []
    for freq in 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return out


def _tokenizer(writer, directory: Path, tok) -> None:
    vocab = {i: t for t, i in tok.get_vocab().items()}
    merges = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    special = set(tok.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([vocab[i] for i in range(len(vocab))])
    writer.add_token_types([3 if i in special else 1 for i in range(len(vocab))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    if tok.bos_token_id is not None:
        writer.add_bos_token_id(tok.bos_token_id)
    if tok.unk_token_id is not None:
        writer.add_unk_token_id(tok.unk_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_chat_template(tok.chat_template)


def write_gguf(directory: Path, target: Path, matrices: Q = Q.F32) -> Path:
    """The checkpoint in directory as a GGUF file; 2-D weights stored as `matrices` (F32, F16 or Q8_0)."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(directory)
    cfg = model.config
    arch = ARCH[cfg.model_type]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(target), arch)
    w.add_name(f"tiny {cfg.model_type}")  # a Mistral file is a llama one: transformers reads it as Llama
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = _rope(cfg)
    rope = rope.get("full_attention", rope)  # Gemma-3: the global layers' base
    w.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    w.add_rope_dimension_count(head_dim)
    extra: dict[str, np.ndarray] = {}
    if arch in ("gemma2", "gemma3", "qwen3", "qwen3moe"):  # convert_hf_to_gguf.py writes a config's head_dim
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch in ("gemma2", "gemma3"):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    if arch == "qwen3moe":
        w.add_expert_count(cfg.num_experts)
        w.add_expert_used_count(cfg.num_experts_per_tok)
        w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    if arch == "phi3" and rope.get("rope_type") == "longrope":
        original = cfg.original_max_position_embeddings
        scale = cfg.max_position_embeddings / original
        w.add_rope_scaling_orig_ctx_len(original)
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
        extra["rope_factors_long.weight"] = np.asarray(rope["long_factor"], dtype=np.float32)
        extra["rope_factors_short.weight"] = np.asarray(rope["short_factor"], dtype=np.float32)
    if arch == "llama" and rope.get("rope_type") == "llama3":
        extra["rope_freqs.weight"] = np.asarray(_llama3_factors(cfg, head_dim), dtype=np.float32)
    _tokenizer(w, directory, tok)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=cfg.to_dict())
    params = dict(model.named_parameters())
    for name, hf in sorted(get_gguf_hf_weights_map(model, processor, model_type=arch).items()):
        if hf not in params or not name.startswith(("token_embd", "output", "blk.")):
            continue
        x = _to_gguf_layout(arch, name, params[hf].detach().numpy(), cfg).astype(np.float32)
        if x.ndim >= 2 and matrices != Q.F32:
            w.add_tensor(name, gguf.quants.quantize(x, matrices), raw_dtype=matrices)
        else:
            w.add_tensor(name, np.ascontiguousarray(x))
    for name, x in extra.items():
        w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return target
