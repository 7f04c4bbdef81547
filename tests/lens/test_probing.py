"""Probing (LSP) against a hand computation: each language mean is the mean, over its prompts, of the hidden state
at the prompt's last real token (whatever the padding and prefix sharing), and thin probe data is warned about."""

import logging

import pytest
import torch

from lensml.lens.probing import ProbeConfig, language_means, probe
from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.templating import encode_prompts
from tests.helpers import SENTENCES


@pytest.fixture(scope="module")
def model_tok(tiny_llama):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    return model, tok


@pytest.mark.parametrize("share_prefix", [True, False])
def test_language_means_are_hand_means_at_each_prompts_last_real_token(model_tok, share_prefix):
    model, tok = model_tok
    texts = SENTENCES["zh"][:5]  # different lengths: batches of 3 are padded
    cfg = ProbeConfig(batch_size=3, share_prefix=share_prefix)
    lengths = {len(ids) for ids in encode_prompts(tok, texts, cfg.max_length)}
    assert len(lengths) > 1
    per_prompt = []
    for ids in encode_prompts(tok, texts, cfg.max_length):
        with torch.no_grad():  # one prompt alone, no padding: its last position is its last real token
            out = model.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        per_prompt.append(torch.stack([h[0, -1] for h in out.hidden_states[1:]]))  # layer outputs, the last normed
    hand = torch.stack(per_prompt).double().mean(0)
    means = language_means(model, tok, texts, cfg)
    assert means.shape == hand.shape == (4, 32) and means.dtype == torch.float64
    assert torch.allclose(means[1], hand[1], atol=1e-5)  # a middle layer, read through its forward hook
    assert torch.allclose(means, hand, atol=1e-5)


def test_one_text_or_repeated_texts_are_warned_about(model_tok, caplog):
    model, tok = model_tok
    texts = {"en": SENTENCES["en"][:1], "zh": [SENTENCES["zh"][0], SENTENCES["zh"][1], SENTENCES["zh"][0]]}
    with caplog.at_level(logging.WARNING, logger="lensml.lens.probing"):
        probe(model, tok, texts, "en", ProbeConfig())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "probe data has one text for 'en': its language mean is that one text's state; add more texts",
        "probe data for 'zh' repeats 1 of its 3 texts: each copy weighs in the language mean again; remove the duplicates"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lensml.lens.probing"):
        probe(model, tok, {lang: SENTENCES[lang][:3] for lang in ("en", "zh")}, "en", ProbeConfig())
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
