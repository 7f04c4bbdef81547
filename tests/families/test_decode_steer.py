"""Every family: the evaluation decoder answers as generate() does, token for token, with and without steering."""

from __future__ import annotations

import pytest
import torch

from lensml.lens.probing import ProbeConfig, probe
from lensml.methods.steer.hooks import SteerConfig, Steering
from lensml.runtime import decoding
from lensml.runtime.generation import _stop_ids
from lensml.runtime.shared_prefix import fits_window
from lensml.runtime.templating import encode_prompts
from tests.families.conftest import load
from tests.helpers import SENTENCES

LANGS = ["en", "zh", "sw"]
# Candidates for prompts that fit a sliding window with their new tokens (the decoder's own path), and prompts
# longer than Mistral's 24-token and Gemma-2's 32-token windows (generate()'s path).
SHORT = ["Hi", "Why do cats purr?", "Hello there", SENTENCES["en"][2], SENTENCES["en"][4], SENTENCES["en"][0]]
LONG = [SENTENCES["zh"][1], SENTENCES["sw"][4] + " " + SENTENCES["sw"][5], SENTENCES["en"][2], SENTENCES["sw"][0]]
NEW = 6


def _alone(model, tok, prompts, stops):
    """generate() on each prompt by itself: the reference answer ids."""
    out = []
    for ids in prompts:
        x = torch.tensor([ids])
        seq = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=NEW,
                             pad_token_id=tok.pad_token_id, eos_token_id=stops, temperature=None, top_p=None,
                             top_k=None)[0, len(ids):].tolist()
        end = next((k for k, t in enumerate(seq) if t in stops), None)
        out.append(seq if end is None else seq[:end])
    return out


def test_decoder_answers_as_generate_with_and_without_steering(family):
    name, path = family
    model, tok = load(path)
    stops = _stop_ids(model, tok)
    assert tok.eos_token_id in stops
    short = [p for p in encode_prompts(tok, SHORT) if fits_window(model, len(p) + NEW)]
    long = encode_prompts(tok, LONG)
    # Both paths are exercised: the decoder's own wherever a window allows it, generate() past a window.
    assert len(short) >= (0 if name == "gemma3" else 3), name  # gemma3's 6-token window holds no prompt
    windowed = name in ("mistral", "gemma2", "gemma3")
    assert fits_window(model, max(len(p) for p in long) + NEW) != windowed, name
    for prompts in (short, long):
        if not prompts:
            continue
        expected = _alone(model, tok, prompts, stops)
        for share in (True, False):
            got = decoding.greedy(model, prompts, NEW, stops, tok.pad_token_id, 3, share_prefix=share)
            assert [g.ids for g in got] == expected, (name, share)
    sub = probe(model, tok, {lang: SENTENCES[lang] for lang in LANGS}, "en", ProbeConfig())
    prompts = (short[:2] + long)[:4]
    plain = decoding.greedy(model, prompts, NEW, stops, tok.pad_token_id, 4)
    with Steering(sub, SteerConfig(strength=10.0, lang="zh")).attach(model):
        fast = decoding.greedy(model, prompts, NEW, stops, tok.pad_token_id, 2)
        slow = decoding._with_generate(model, prompts, NEW, stops, tok.pad_token_id, 4, "generate")
    assert [g.ids for g in fast] == [g.ids for g in slow]
    for f, s, p in zip(fast, slow, plain):
        assert f.logprobs == pytest.approx(s.logprobs, abs=1e-4)
    # The steering is there: the first token's log-probability moves (random weights may keep the argmax; on the
    # tiny Granite, whose 12x embeddings dominate the last state, by 1e-4, on the others by 0.009 to 1.1).
    assert max(abs(f.logprobs[0] - p.logprobs[0]) for f, p in zip(fast, plain)) > 1e-5


def test_answer_nll_from_captured_states_equals_a_full_forward(family):
    """The quick evaluation's NLL after training reruns only the trained layers and the LM head from states the
    base model's answers captured: the same number as a full forward wherever it is used (not under soft-capping)."""
    from lensml.runtime.generation import answer_nll, answer_nll_from_states

    name, path = family
    model, tok = load(path)
    prompts = encode_prompts(tok, SHORT[1:4])
    got = decoding.greedy(model, prompts, NEW, [tok.eos_token_id], tok.pad_token_id, 3, capture=2)
    ids, states = [g.ids for g in got], [g.states for g in got]
    if name == "gemma3":  # the window holds no prompt: generate() answered, and it captures nothing
        assert all(s is None for s in states)
        return
    full = answer_nll(model, tok, SHORT[1:4], answer_ids=ids)
    cached = answer_nll_from_states(model, 2, prompts, ids, states, batch_size=2)
    if name == "gemma2":  # final-logit soft-capping: the LM head is more than a linear map, so it says so
        assert cached is None
    else:
        assert cached == pytest.approx(full, rel=1e-5), name
