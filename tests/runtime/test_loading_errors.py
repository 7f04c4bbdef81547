"""One line, not a traceback, for every model that cannot be loaded: truncated weights, a damaged GGUF, pickle-only
weights, a chat template that tries to leave Jinja's sandbox; and the GGUF conversion cache under concurrent first
runs and after damage."""

import json
import shutil
import struct
import threading

import pytest
import torch

from lensml.cli import main
from lensml.errors import LensError
from lensml.runtime import models
from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.templating import render

ESCAPE = "{{ cycler.__init__.__globals__.os.popen('id').read() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def truncated(tiny_llama, tmp_path_factory):
    folder = _copy(tiny_llama, tmp_path_factory.mktemp("broken") / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    return folder


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_truncated_weights_fail_in_one_line_in_probe_chat_and_plot(truncated, parallel_data, tmp_path, capsys):
    expected = f"error: cannot load model '{truncated}': a weights file is damaged or truncated"
    assert main(["probe", "--model", str(truncated), "--probe-data", str(parallel_data), "--langs", "zh",
                 "--out", str(tmp_path / "p")]) == 2
    assert _one_line_error(capsys).startswith(expected) and not (tmp_path / "p").exists()
    assert main(["chat", str(truncated), "--prompt", "hi"]) == 2
    assert _one_line_error(capsys).startswith(expected)
    run = tmp_path / "run"  # a run folder whose base model is the damaged one
    _copy(truncated, run / "model")
    (run / "manifest.json").write_text(json.dumps({"kind": "run", "base_model": str(truncated), "config": {
        "langs": ["zh"], "central": "en", "eval": {"data": str(parallel_data), "samples": 2}}}))
    assert main(["plot", "subspace", str(run)]) == 2
    assert _one_line_error(capsys).startswith(expected)


def test_a_100_byte_gguf_fails_in_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\x07" * 92)
    with pytest.raises(LensError) as info:
        models.convert_gguf(bad)
    message = str(info.value)
    assert message.startswith(f"cannot read GGUF file {bad}, damaged or not a GGUF model (struct.error: ")
    assert message.endswith("): download it again") and "\n" not in message and len(message) < 300


def test_pickle_only_weights_are_refused_with_the_reason(tiny_llama, tmp_path, capsys):
    folder = _copy(tiny_llama, tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    assert main(["chat", str(folder), "--prompt", "hi"]) == 2
    assert _one_line_error(capsys) == (
        f"error: model directory {folder} holds only pickle weights (pytorch_model.bin), which can run code when "
        f"loaded, so lensml does not load them: convert them once to safetensors where you trust the file "
        f"(transformers: save_pretrained(..., safe_serialization=True))")


def test_a_template_that_leaves_the_sandbox_is_refused_in_one_line(tiny_llama, tmp_path, capsys):
    folder = _copy(tiny_llama, tmp_path / "escape")
    (folder / "chat_template.jinja").write_text(ESCAPE)
    assert main(["chat", str(folder), "--prompt", "hi"]) == 2
    line = _one_line_error(capsys)
    assert line.startswith(f"error: the chat template of {folder} is refused: it tries to reach Python internals "
                           f"outside Jinja's sandbox (access to attribute '__init__'")
    template = tmp_path / "escape.jinja"
    template.write_text(ESCAPE)
    with pytest.raises(LensError, match=f"the chat template of {template} is refused: it tries to reach Python"):
        load_model(ModelConfig(model=str(tiny_llama), template=str(template)))


def test_a_template_that_escapes_later_is_refused_when_rendered(tiny_llama, tmp_path):
    """A template can pass the load-time check (one user turn) and try on another message: render says so."""
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{% if m['role'] == 'system' %}{{ cycler.__init__.__globals__ }}"
                        "{% endif %}{{ m['content'] }}{% endfor %}")
    _, tok, _ = load_model(ModelConfig(model=str(tiny_llama), template=str(template)))
    assert render(tok, "hi") == "hi"
    with pytest.raises(LensError, match="the chat template is refused: it tries to reach Python internals"):
        render(tok, "hi", system="be brief")


class _Loader:
    """Stands in for transformers' GGUF loading: the tiny model, both callers held at a barrier so they race."""

    def __init__(self, source, barrier=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source, self.barrier, self.calls = source, barrier, 0
        self.lock = threading.Lock()
        self.load_tokenizer, self.load_model = AutoTokenizer.from_pretrained, AutoModelForCausalLM.from_pretrained

    def tokenizer(self, *_a, **_k):
        return self.load_tokenizer(self.source)

    def model(self, *_a, **_k):
        with self.lock:  # one from_pretrained at a time: transformers' meta-device init is process-global
            self.calls += 1
            model = self.load_model(self.source)
        if self.barrier is not None:
            self.barrier.wait(timeout=60)  # both conversions are done before either renames
        return model


def _patch_loader(monkeypatch, loader):
    from contextlib import nullcontext

    monkeypatch.setattr(models, "reading_once", nullcontext)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", loader.tokenizer)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", loader.model)


def test_two_first_conversions_at_once_both_succeed(tiny_llama, tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    loader = _Loader(tiny_llama, threading.Barrier(2))
    _patch_loader(monkeypatch, loader)
    results, errors = [], []

    def convert():
        try:
            results.append(models.convert_gguf(gguf))
        except Exception as err:  # noqa: BLE001 - the loser's error fails the test
            errors.append(err)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and loader.calls == 2 and len(set(results)) == 1
    target = results[0]
    assert sorted(p.name for p in target.parent.iterdir()) == ["digests.json", target.name]  # no .convert-* left
    assert (target / "config.json").is_file() and (target / "model.safetensors").stat().st_mode & 0o777 == 0o666 & \
        ~_umask()


def test_a_damaged_converted_checkpoint_is_converted_again(tiny_llama, tmp_path, monkeypatch, caplog):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"another GGUF stand-in")
    loader = _Loader(tiny_llama)
    _patch_loader(monkeypatch, loader)
    target = models.convert_gguf(gguf)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert models.convert_gguf(gguf) == target and loader.calls == 2
    assert "removing the damaged converted checkpoint" in caplog.text
    assert models.convert_gguf(gguf) == target and loader.calls == 2  # whole again: a cache hit


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
