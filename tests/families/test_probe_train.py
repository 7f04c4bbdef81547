"""Every family: probing with the reference cache filled in the same pass equals two passes, and a LENS step on
the cached top block gives the loss and gradients of a plain full forward of the model."""

from __future__ import annotations

import pytest
import torch

from lensml.data.loaders import load_rows, load_texts
from lensml.lens.losses import LensObjective, LossConfig
from lensml.lens.probing import ProbeConfig, probe, shares_prompts
from lensml.lens.reference_cache import build_cache, empty_cache
from lensml.methods.lens import micro_step
from lensml.runtime.models import decoder_of
from lensml.runtime.templating import gather_last, masked_mean, pad
from lensml.runtime.topblock import TopBlock
from lensml.training import TrainConfig
from tests.families.conftest import load
from tests.helpers import assert_caches_match

LANGS = ["en", "zh", "sw"]


def test_one_pass_probe_and_cache_equal_two_passes(family, parallel_data):
    _, path = family
    model, tok = load(path)
    texts, rows = load_texts(str(parallel_data), LANGS), load_rows(str(parallel_data), LANGS)
    pcfg, tcfg = ProbeConfig(batch_size=16), TrainConfig(batch_size=8)
    assert shares_prompts(texts, pcfg, rows, tcfg, LANGS)
    two_sub = probe(model, tok, texts, "en", pcfg)
    two_cache = build_cache(model, tok, rows, LANGS, "en", tcfg)
    one_cache = empty_cache(model, tok, rows, LANGS, "en", tcfg)
    one_sub = probe(model, tok, texts, "en", pcfg, cache=one_cache)
    assert two_sub.num_layers == model.config.num_hidden_layers and torch.isfinite(two_sub.means).all()
    assert one_cache.complete and one_cache.start == two_cache.start and one_cache.as_tuple == two_cache.as_tuple
    assert torch.equal(one_sub.means, two_sub.means) and torch.equal(one_sub.specific, two_sub.specific)
    assert_caches_match(one_cache, two_cache, LANGS, exact=True)


def _plain_loss(model, cache, objective, idx):
    """The LENS loss from one ordinary forward per language over whole prompts (no cache, no shared prefix)."""
    decoder, states = decoder_of(model), {}
    for lang in LANGS:
        batch = pad([cache.ids[lang][i] for i in idx], cache.pad_id, "left")
        final = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=False).last_hidden_state.float()
        states[lang] = {"last": gather_last(final, batch.attention_mask),
                        "mean": masked_mean(final, batch.attention_mask)}
    refs = {lang: {"last": torch.stack([cache.last[lang][i] for i in idx]),
                   "mean": torch.stack([cache.mean[lang][i] for i in idx])} for lang in LANGS}
    return objective(states, refs)["loss"]


def test_cached_top_block_step_equals_a_plain_forward(family, parallel_data):
    """Loss and gradients of the trained layers, with the shared prefix where the family allows one; the weights
    moved first so that the loss is not at its zero-gradient start."""
    _, path = family
    model, tok = load(path)
    rows = load_rows(str(parallel_data), LANGS)[:8]
    cfg = TrainConfig(batch_size=8, start_layer=-2)
    sub = probe(model, tok, {lang: [r[lang] for r in rows] for lang in LANGS}, "en", ProbeConfig())
    cache = build_cache(model, tok, rows, LANGS, "en", cfg)
    block = TopBlock(model, -2, as_tuple=cache.as_tuple)
    model.requires_grad_(False)  # as training leaves it: only the top block takes gradients
    params = block.parameters()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    objective = LensObjective.from_subspace(sub, LANGS, "en", LossConfig(retain="both", lambda3=10.0), "cpu")
    idx = list(range(len(rows)))
    grads = []
    for step in ("cached", "plain"):
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        if step == "cached":
            loss = micro_step(block, cache, objective, idx, LANGS, torch.device("cpu"), 1.0)["loss"]
        else:
            plain = _plain_loss(model, cache, objective, idx)
            plain.backward()
            loss = plain.item()
        grads.append((loss, [p.grad.clone() for p in params]))
        for p in params:
            p.requires_grad_(False)
    (cached_loss, cached_grads), (plain_loss, plain_grads) = grads
    assert cached_loss > 1e-6 and cached_loss == pytest.approx(plain_loss, rel=1e-4)
    scale = max(g.abs().max().item() for g in plain_grads)
    assert scale > 0
    for a, b in zip(cached_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * scale)
    assert not any(p.requires_grad for p in model.parameters())


def test_longrope_shares_a_prefix_only_below_its_switch(family_models):
    """Phi-3.5's LongRoPE switches a whole forward to its long factors once the forward's longest position passes
    original_max_position_embeddings (64 in the tiny model): a prefix run alone would be rotated with the short
    ones. Below the switch the shared prefix gives the unshared states; above it, sharing is off (it gave probe
    means 2.8e-3 apart before)."""
    from lensml.runtime.shared_prefix import rope_switch, shareable
    from lensml.runtime.templating import encode_prompts
    from tests.helpers import SENTENCES

    model, tok = load(family_models("phi3"))
    assert rope_switch(model.config) == 64
    system = "You are a helpful assistant."  # a common prefix for Phi-3's template
    short = {lang: SENTENCES[lang][:4] for lang in LANGS}
    long = {lang: [" ".join(SENTENCES[lang][i:i + 3]) for i in range(4)] for lang in LANGS}
    for texts, shares in ((short, True), (long, False)):
        ids = [s for lang in LANGS for s in encode_prompts(tok, texts[lang], system=system)]
        assert (max(len(s) for s in ids) > 64) != shares and shareable(model, ids) == shares
        on = probe(model, tok, texts, "en", ProbeConfig(system_prompt=system))
        off = probe(model, tok, texts, "en", ProbeConfig(system_prompt=system, share_prefix=False))
        if shares:
            torch.testing.assert_close(on.means, off.means, rtol=0, atol=1e-5)
        else:
            assert torch.equal(on.means, off.means)
