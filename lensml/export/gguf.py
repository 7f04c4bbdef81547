"""GGUF out when the model came in as GGUF: the source file with only the changed tensors replaced.

llama.cpp and ollama run GGUF, and the default model is one. Rather than converting the
whole enhanced checkpoint (re-quantising layers that never changed), the source GGUF
is copied (lensml.export.gguf_file): every key-value and every untouched tensor byte for byte, and each changed
tensor is written in the type asked for (TYPES), within llama.cpp's rules (tensor_type): 1-D tensors (norms,
biases) and the MoE router always F32, since llama.cpp's element-wise ops take no F16 or quantised operand
(an F16 norm aborts it at the first token); matrices in a type llama.cpp multiplies with and gguf-py writes,
F16 where a row does not fill the type's blocks. Q8_0 is the default: the source's own 4-bit type undoes the
edit in llama.cpp (README, "Run the result in llama.cpp / ollama"). HF -> GGUF tensor processing is the inverse of
transformers' GGUF loader: Llama's (and Mistral's) Q/K rows are permuted back to llama.cpp's
rotary layout, Gemma's norm weights get their +1 back, Qwen3-MoE's fused expert gate/up tensor
is split in two; Qwen2, Qwen3 and Phi-3 (fused qkv_proj and gate_up_proj, as llama.cpp keeps
them) are stored as they are.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants
from gguf import GGMLQuantizationType as Q
from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

from lensml.errors import LensError
from lensml.export.gguf_file import GGUFFile, write_copy
from lensml.runtime.gguf_read import reading_once

log = logging.getLogger(__name__)

#: --gguf-out choices: the source file's own type, Q8_0, F16 or F32 for changed matrices. gguf-py 0.19 cannot
#: quantise to any K-quant (Q6_K, Q5_K, Q4_K raise NotImplementedError), so those are not offered.
TYPES = ("source", "q8_0", "f16", "f32")
DEFAULT_TYPE = "q8_0"
#: Matrix types llama.cpp computes with (CPU matmul and get_rows) that gguf-py can write.
LLAMACPP_TYPES = frozenset({Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0})
#: Tensors llama.cpp's convert_hf_to_gguf always keeps in F32 whatever their rank (the MoE router's logits feed
#: a softmax and top-k directly; norms are element-wise).
_F32_ALWAYS = (".ffn_gate_inp.", "_norm.weight")


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute (transformers' _reverse_permute_weights undoes it)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


#: GGUF architectures whose tensors transformers' GGUF loader takes as stored, each checked by a read-back test
#: (tests/families/test_gguf.py): Qwen2's q/k/v biases and Qwen3's q/k norms unpermuted, and Phi-3's fused
#: qkv_proj and gate_up_proj, which llama.cpp keeps fused (attn_qkv, ffn_up of twice the width).
AS_STORED = ("qwen2", "qwen3", "phi3")
#: Every GGUF architecture export_gguf writes (the others are refused before anything is written).
SUPPORTED = ("llama", "gemma2", "gemma3", "nemotron", "qwen3moe", *AS_STORED)


def _to_gguf_layout(arch: str, gguf_name: str, w: np.ndarray, config) -> np.ndarray:
    """One HF tensor in the layout llama.cpp's converter gives it: the inverse of transformers' GGUF loader."""
    if arch == "llama":  # also Mistral's files: llama.cpp writes them as llama
        if ".attn_q." in gguf_name:
            return _permute(w, config.num_attention_heads, config.num_attention_heads)
        if ".attn_k." in gguf_name:
            return _permute(w, config.num_attention_heads, config.num_key_value_heads)
        return w
    if arch in ("gemma2", "gemma3", "nemotron"):
        return w + 1 if "norm.weight" in gguf_name else w
    if arch == "qwen3moe":
        # transformers fuses each layer's experts into gate_up_proj (E, 2I, H), gate rows first; GGUF keeps
        # ffn_gate_exps and ffn_up_exps (E, I, H) apart, and both map to that one parameter.
        half = w.shape[1] // 2 if w.ndim == 3 else 0
        if ".ffn_gate_exps." in gguf_name:
            return w[:, :half]
        if ".ffn_up_exps." in gguf_name:
            return w[:, half:]
        return w
    if arch in AS_STORED:
        return w
    raise LensError(f"GGUF export does not know the tensor layout of architecture '{arch}' (it knows "
                    f"{', '.join(SUPPORTED)}): use OUT/model (or llama.cpp's convert_hf_to_gguf.py on it)")


def tensor_type(name: str, shape: tuple[int, ...], source_type: Q, wanted: str) -> Q:
    """The type a changed tensor is stored in: llama.cpp's rules first, then what was asked for.

    llama.cpp's element-wise ops (add, mul: norms, biases) take F32 operands only, and every type a matrix is
    stored in must be one its matmul and gguf-py's quantiser both know; a row that does not fill whole blocks of
    the wanted type goes to F16, as llama.cpp's converter does.
    """
    if len(shape) <= 1 or any(part in name for part in _F32_ALWAYS):
        return Q.F32
    qtype = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}.get(wanted, source_type)
    if qtype not in LLAMACPP_TYPES:
        log.warning("gguf-py cannot write %s: the changed tensor %s is stored as F16", Q(qtype).name, name)
        return Q.F16
    block = GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        log.warning("%s rows of %d do not fill %s blocks of %d: stored as F16", name, shape[-1], qtype.name, block)
        return Q.F16
    return qtype


def hf_name(hf_of: dict[str, str], gguf_name: str) -> str | None:
    """The HF parameter a GGUF tensor holds. transformers' map names MoE expert tensors without the ".weight"
    llama.cpp gives them (blk.N.ffn_gate_exps.weight in a real file: its HF parameter, experts.gate_up_proj, has no
    suffix), so those are looked up without it."""
    found = hf_of.get(gguf_name)
    if found is None and gguf_name.endswith("_exps.weight"):
        found = hf_of.get(gguf_name.removesuffix(".weight"))
    return found


def _encode(w: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return w.astype(np.float32)
    if qtype == Q.F16:
        return w.astype(np.float16)
    return quants.quantize(w.astype(np.float32), qtype)


def export_gguf(model, source: str | os.PathLike, target: str | os.PathLike, changed: list[str],
                gguf_type: str = DEFAULT_TYPE) -> dict:
    """Write target: source with the HF parameters named in `changed` taken from model. Returns a summary."""
    if gguf_type not in TYPES:
        raise LensError(f"unknown GGUF tensor type '{gguf_type}': use one of {', '.join(TYPES)}")
    source, target = Path(source), Path(target)
    src = GGUFFile(source)
    try:
        if src.architecture not in SUPPORTED:
            _to_gguf_layout(src.architecture, "", np.zeros(0), model.config)  # refused before anything is written
        # Names as the file's architecture spells them (a Mistral model read from a llama file has model_type
        # mistral, which gguf-py has no map for), with that architecture's own name processing (MoE experts).
        processor = TENSOR_PROCESSORS.get(src.architecture, TensorProcessor)(config=model.config.to_dict())
        with reading_once():  # the name map once, not per submodule
            hf_of = get_gguf_hf_weights_map(model, processor, model_type=src.architecture)
        params = dict(model.named_parameters())
        wanted = set(changed)
        replaced: dict[str, tuple[bytes, int]] = {}
        written: dict[str, str] = {}
        for t in src.tensors:
            hf = hf_name(hf_of, t.name)
            if hf in wanted:
                w = params[hf].detach().to("cpu", torch.float32).numpy()
                w = _to_gguf_layout(src.architecture, t.name, w, model.config)
                qtype = tensor_type(t.name, w.shape, GGMLQuantizationType(t.type), gguf_type)
                data = _encode(w, qtype)
                replaced[t.name] = (np.ascontiguousarray(data).tobytes(), int(qtype))
                written[t.name] = qtype.name
        missing = wanted - {hf_name(hf_of, name) for name in written}
        if missing:
            raise LensError(f"GGUF export: {sorted(missing)[0]} has no tensor in {source.name}: use OUT/model")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-")
        os.close(fd)
        try:
            write_copy(src, tmp, replaced)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        src.close()
    return {"source": str(source), "replaced": written, "type": gguf_type}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
