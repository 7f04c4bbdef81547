"""The base-answer cache ($LENSML_CACHE/answers): a damaged entry is logged, removed and recomputed (it used to
fail every later run), and writers running at once never publish a mixed file."""

import logging
import threading

import pytest
import torch

from lensml.evaluation import quick
from lensml.runtime.models import ModelConfig, cache_dir, load_model

PROMPTS = {"en": ["Why do cats purr?", "What is a prime number?"], "zh": ["猫为什么会发出呼噜声？"]}


@pytest.fixture(scope="module")
def model_tok(tiny_llama):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    return model, tok


def _entry():
    """The entry's answers (.json) and states (.L2.safetensors); its kept prefill (.L2.prefill.safetensors) is there too."""
    files = {"".join(f.suffixes): f for f in (cache_dir() / "answers").iterdir()}
    assert sorted(files) == [".L2.prefill.safetensors", ".L2.safetensors", ".json"], files
    return files[".json"], files[".L2.safetensors"]


@pytest.mark.parametrize("damage", ["truncated states", "json not utf-8", "json not a record"])
def test_a_damaged_entry_is_removed_and_recomputed(damage, model_tok, monkeypatch, caplog):
    model, tok = model_tok
    cfg = quick.QuickEvalConfig(max_new_tokens=3)
    first = quick.answer_before(model, tok, PROMPTS, "en", cfg, start=2)
    doc, states = _entry()
    if damage == "truncated states":
        states.write_bytes(states.read_bytes()[:60])
    elif damage == "json not utf-8":
        doc.write_bytes(b"\xff\xfe{not json")
    else:
        doc.write_text('{"answers": "no"}')
    calls = []
    real = quick.generate
    monkeypatch.setattr(quick, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    with caplog.at_level(logging.WARNING, logger="lensml.evaluation.quick"):
        again = quick.answer_before(model, tok, PROMPTS, "en", cfg, start=2)
    assert calls == [1]  # recomputed, not failed
    assert "removing the damaged base-answer cache entry" in caplog.text and doc.name in caplog.text
    assert again.answers == first.answers and again.central_ids == first.central_ids
    assert all(torch.equal(a, b) for a, b in zip(again.central_states, first.central_states))
    third = quick.answer_before(model, tok, PROMPTS, "en", cfg, start=2)  # the rewritten entry is whole
    assert calls == [1] and third.lower == first.lower and len(_entry()) == 2


def test_writers_at_once_never_mix_their_bytes(tmp_path):
    path = tmp_path / "x.L2.safetensors"
    runs = [quick.Answers({}, "en", {}, 0.0, [], 2, [torch.full((300, 256), float(k)) for _ in range(4)], f"d{k}")
            for k in range(2)]  # ~1 MB a file: each save takes long enough for the other writer to run meanwhile
    start, errors = threading.Barrier(2), []

    def write(answers):
        start.wait()
        try:
            for _ in range(100):
                quick._save_states(path, answers)
        except Exception as err:  # noqa: BLE001 - any failure of a writer fails the test below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(a,)) for a in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    states, lower = quick._load_states(path, 2)
    k = int(lower[1:])
    assert all(torch.equal(s, runs[k].central_states[0]) for s in states)  # one writer's file, whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
