"""Which model families lensml runs, checked from a config before any weight loads.

lensml needs a decoder-only causal LM whose decoder has `.layers` and `.norm` (the top block,
prefix sharing and the decoder use the model's own forward around those). Whether a checkpoint
has that is decided from its config alone: the model is built on PyTorch's meta device (no
memory, no weights, under a second for an 8B shape), which also gives its parameter count for
the size defaults and `lens run --dry-run`. A family that cannot work is refused in one line
naming what is missing, before anything heavy loads.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers import __version__ as transformers_version
from transformers.integrations.gguf import read_gguf_metadata
from transformers.integrations.gguf.utils import is_gguf_arch_supported
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

from lensml.errors import LensError

log = logging.getLogger(__name__)

#: model_type of every family the test matrix runs through probing, training, saving, decoding and steering
#: (tests/families); the GGUF architectures exported are lensml.export.gguf.SUPPORTED.
TESTED = ("llama", "mistral", "phi3", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3", "gemma3_text", "olmo2",
          "granite")


@dataclass
class Family:
    """What a checkpoint's config says about it, read without its weights."""

    model_type: str
    architecture: str  # the causal LM class transformers builds
    layers: int
    hidden_size: int
    parameters: int
    tested: bool


def decoder_of(model):
    """The decoder stack (embeddings, layers, final norm) under the LM head."""
    inner = getattr(model, model.base_model_prefix, None)
    if inner is None or not hasattr(inner, "layers"):
        inner = model.get_decoder() if hasattr(model, "get_decoder") else None
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        raise LensError(f"unsupported architecture {type(model).__name__}: lensml needs a decoder with .layers and .norm")
    return inner


def read_config(path: str, trust_remote_code: bool = False, revision: str | None = None, name: str | None = None):
    """The checkpoint's transformers config (config.json only)."""
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except ValueError as err:
        text = str(err)
        if any(k in text for k in ("does not recognize", "Unrecognized", "model_type", "trust_remote_code")):
            hint = ("pass --trust-remote-code if you trust the code its repository ships, or upgrade transformers"
                    if not trust_remote_code else "upgrade transformers")
            raise LensError(f"model '{name or path}' is of a model type transformers {transformers_version} does not "
                            f"know: {hint}") from err
        raise LensError(f"cannot read the config of model '{name or path}': {text.splitlines()[0]}") from err


def check_family(config, name: str, trust_remote_code: bool = False) -> Family:
    """Refuse, in one line, a model lensml cannot train; otherwise what it is (from the config alone)."""
    model_type = getattr(config, "model_type", "?")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as err:
        archs = ",".join(getattr(config, "architectures", None) or []) or "none named"
        raise LensError(f"model '{name}' (model_type {model_type}, architectures {archs}) has no causal LM class in "
                        f"transformers {transformers_version}: lensml trains decoder-only causal LMs") from err
    try:
        decoder = decoder_of(model)
    except LensError:
        raise LensError(f"model '{name}' ({type(model).__name__}) has no decoder with .layers and .norm: lensml "
                        f"runs its top layers from cached inputs and cannot train this family") from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    family = Family(model_type, type(model).__name__, len(decoder.layers), int(getattr(text, "hidden_size", 0)),
                    sum(p.numel() for p in model.parameters()), model_type in TESTED)
    if not family.tested:
        log.warning("model type %s is not among the families lensml's tests run (%s); it has the decoder "
                    "lensml needs, so it runs, untested", model_type, ", ".join(TESTED))
    return family


def check_gguf(path) -> str:
    """A GGUF file's architecture, refused in one line when transformers' GGUF loader cannot read it."""
    try:
        arch = read_gguf_metadata(str(path))[0]["general.architecture"]
    except (ValueError, KeyError, OSError, struct.error) as err:  # struct.error: a truncated header
        raise LensError(f"{path} is not a readable GGUF file ({str(err).splitlines()[0]}): check --gguf") from err
    known = {a.replace("_", "") for a in GGUF_SUPPORTED_ARCHITECTURES}
    if arch.replace("_", "").replace("-", "") not in known and not is_gguf_arch_supported(arch):
        raise LensError(f"GGUF architecture '{arch}' of {path} is not one transformers {transformers_version} reads "
                        f"from GGUF: pass the original checkpoint with --model DIR")
    return arch
