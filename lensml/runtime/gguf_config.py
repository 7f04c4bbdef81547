"""What transformers' GGUF loader leaves out of a model's config, read back from the file as llama.cpp wrote it.

transformers rebuilds a config from a GGUF's key-values through a fixed table, and some of what
llama.cpp's converter writes has no entry there. The model then loads without error but is not
the model in the file: measured on tiny models, logits move by 1e-2 and more. Per family:

- Phi-3.5 (phi3): LongRoPE lives in the tensors rope_factors_long / rope_factors_short and the key
  rope.scaling.original_context_length; without them the converted model rotates with plain RoPE.
- Llama-3.1 (llama): the "llama3" rope scaling becomes one tensor of per-frequency divisors,
  rope_freqs. transformers has no rope type that takes such a list but LongRoPE, whose short and
  long factors divide the frequencies the same way: with both set to rope_freqs and no attention
  scaling it rotates as llama.cpp does at every length.
- Gemma-2 and Gemma-3: the soft-capping values (Gemma-2) and the query scale, which llama.cpp
  derives from the shapes (1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B models) while
  transformers falls back to its default of 256.

`restore_config` writes these into a converted checkpoint's config.json (rotary frequencies and
scales are not weights, so the saved tensors stay right); it changes nothing a file does not say.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from transformers import AutoConfig
from transformers.integrations import GGUF_CONFIG_MAPPING
from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata

from lensml.errors import LensError
from lensml.io import write_json_atomic

log = logging.getLogger(__name__)

_F32 = 0  # ggml type of plain float32 tensors (rope factors are always written so)
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}  # llama.cpp's test for its 27B query scale


def read_metadata(path: str | Path) -> tuple[dict, dict]:
    """(key-values, {tensor name: (shape, ggml type, absolute offset, bytes)}) of a GGUF file, no tensor data."""
    metadata, _ = read_gguf_metadata(str(path))
    header = GgufHeader.from_file(str(path))
    tensors = {t.name: (t.shape, t.ggml_type, header.data_start + t.offset, t.nbytes) for t in header.tensors}
    return metadata, tensors


def _vector(path: Path, entry) -> list[float] | None:
    _shape, ggml_type, start, size = entry
    if ggml_type != _F32:
        return None
    data = np.memmap(path, mode="r", dtype=np.uint8, offset=start, shape=(size,))
    return np.frombuffer(bytes(data), dtype="<f4").astype(float).tolist()


def config_fixes(path: str | Path, metadata: dict | None = None, tensors: dict | None = None) -> dict:
    """Config fields the GGUF holds and transformers' loader does not read: {field: value}."""
    path = Path(path)
    if metadata is None or tensors is None:
        metadata, tensors = read_metadata(path)
    arch = metadata.get("general.architecture")

    def key(name: str):
        return metadata.get(f"{arch}.{name}")

    fixes: dict = {}
    theta = key("rope.freq_base") or 10000.0
    context = key("context_length")
    if arch == "phi3" and "rope_factors_long.weight" in tensors and "rope_factors_short.weight" in tensors:
        original = key("rope.scaling.original_context_length") or context
        rope = {"rope_type": "longrope", "rope_theta": float(theta),
                "long_factor": _vector(path, tensors["rope_factors_long.weight"]),
                "short_factor": _vector(path, tensors["rope_factors_short.weight"]),
                "original_max_position_embeddings": int(original)}
        if rope["long_factor"] and rope["short_factor"]:
            fixes["rope_parameters"] = rope
            fixes["original_max_position_embeddings"] = int(original)
    if arch == "llama" and "rope_freqs.weight" in tensors:
        factors = _vector(path, tensors["rope_freqs.weight"])
        if factors:
            fixes["rope_parameters"] = {"rope_type": "longrope", "rope_theta": float(theta), "long_factor": factors,
                                        "short_factor": factors, "attention_factor": 1.0,
                                        "original_max_position_embeddings": int(context)}
    if arch in _GEMMA_27B_LAYERS:
        head_dim = key("attention.key_length")
        if key("block_count") == _GEMMA_27B_LAYERS[arch]:
            fixes["query_pre_attn_scalar"] = key("embedding_length") // key("attention.head_count")
        elif head_dim:
            fixes["query_pre_attn_scalar"] = int(head_dim)
        for name in ("attn_logit_softcapping", "final_logit_softcapping"):
            if key(name) is not None:
                fixes[name] = float(key(name))
    return fixes


def restore_config(checkpoint: str | Path, gguf_path: str | Path) -> dict:
    """Write the GGUF's config fields that transformers left out into checkpoint/config.json; returns those
    that changed ({} when the config already says what the file says). Atomic: a reader sees one or the other."""
    cfg_path = Path(checkpoint) / "config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    changed = {k: v for k, v in config_fixes(gguf_path).items() if config.get(k) != v}
    if changed:
        log.info("restored from %s what transformers' GGUF loader left out: %s", Path(gguf_path).name,
                 ", ".join(sorted(changed)))
        if "rope_parameters" in changed:
            config.pop("rope_scaling", None)  # the older name of the same field
        config.update(changed)
        try:
            write_json_atomic(cfg_path, config)
        except OSError as err:  # loading on would give another model than the file's
            raise LensError(f"cannot write {cfg_path} ({err.strerror or err}), which needs {', '.join(sorted(changed))} "
                            f"from the GGUF file: make $LENSML_CACHE writable") from err
    return changed


#: GGUF architecture -> transformers model_type, where they are spelled differently.
_MODEL_TYPES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gemma3": "gemma3_text"}


def config_of(path: str | Path):
    """The transformers config a GGUF file converts to, from its key-values alone (milliseconds, nothing
    converted or written; transformers' own path parses the whole vocabulary, 7 s on SmolLM2): for plans
    (`lens run --dry-run`) that need shapes and a parameter count, not weights."""
    metadata, tensors = read_metadata(path)
    arch = metadata["general.architecture"]
    model_type = _MODEL_TYPES.get(arch, arch)
    mapping = GGUF_CONFIG_MAPPING.get(model_type) or GGUF_CONFIG_MAPPING.get(arch) or {}
    values = {}
    for key, value in metadata.items():
        field = mapping.get(key[len(arch) + 1:]) if key.startswith(arch + ".") else None
        if isinstance(field, str):
            values[field] = value
    tokens = metadata.get("tokenizer.ggml.tokens")  # the reader gives a string array's length
    if "vocab_size" not in values and isinstance(tokens, int):
        values["vocab_size"] = tokens
    values["tie_word_embeddings"] = "output.weight" not in tensors
    values.update(config_fixes(path, metadata, tensors))
    return AutoConfig.for_model(model_type, **values)
