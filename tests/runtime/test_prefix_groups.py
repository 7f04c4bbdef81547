"""Prompts cut from the left past the template run whole; the others still share its prefix.

Before, one prompt cut to the token budget (112 of the 200 embedded Bengali prompts at 128 tokens)
emptied the shared prefix of its whole language in probing, and of every language in training,
whose step then padded all languages to the longest prompt of any. The numbers must stay those of
whole prompts.
"""

import pytest
import torch

from lensml.runtime.shared_prefix import (
    Prefix,
    batch_for,
    common_prefix_length,
    group_batches,
    sharing,
    split,
    template_prefix_length,
)
from lensml.runtime.templating import encode_prompts, length_sorted_batches
from tests.helpers import assert_caches_match

CUT = [9, 8, 7, 6, 5]  # a sequence that lost the opening the others share
SEQS = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7, 7], CUT, [1, 2, 3, 4, 5, 8]]


def test_the_prefix_of_the_sequences_that_open_alike():
    assert common_prefix_length(SEQS) == 0  # one cut sequence empties the common prefix
    assert template_prefix_length(SEQS) == 5
    head, tails = split(SEQS, partial=True)
    assert head == [1, 2, 3, 4, 5] and tails == [[6], [7, 7], CUT, [8]]
    assert sharing(SEQS, tails) == [True, True, False, True]
    assert split(SEQS) == ([], SEQS)  # without partial: as before
    assert split(SEQS, enabled=False, partial=True) == ([], SEQS)
    assert template_prefix_length([[1, 2, 3, 4, 5], CUT]) == 0  # fewer than two share an opening
    assert template_prefix_length([[1, 2, 3, 9, 9], [1, 2, 3, 8, 8], CUT]) == 0  # 3 < the 4-token minimum
    every = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]
    assert template_prefix_length(every) == common_prefix_length(every) == 5
    assert split(every, partial=True) == split(every)


def test_batches_never_mix_shared_and_whole_sequences():
    lengths, shared = [1, 2, 5, 1, 3, 9], [True, True, False, True, False, True]
    batches = group_batches(lengths, shared, 2)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len({shared[i] for i in b}) == 1 for b in batches)
    assert batches == [[0, 3], [1, 5], [4, 2]]  # each group length-sorted
    assert group_batches(lengths, [True] * 6, 4) == length_sorted_batches(lengths, 4)
    assert group_batches(lengths, [False] * 6, 4) == length_sorted_batches(lengths, 4)


def test_a_batch_follows_the_prefix_or_runs_whole_never_both():
    class Cache:
        def batch_repeat_interleave(self, n):
            self.n = n

    pre = Prefix([1, 2, 3, 4, 5], Cache())
    head, tails = split(SEQS, partial=True)
    shared = sharing(SEQS, tails)
    batch, past = batch_for(pre, SEQS, tails, [0, 3], 0, shared=shared)
    assert batch.past_length == 5 and past.n == 2 and batch.input_ids.tolist() == [[6], [8]]
    batch, past = batch_for(pre, SEQS, tails, [2], 0, shared=shared)
    assert past is None and batch.past_length == 0 and batch.input_ids.tolist() == [CUT]
    with pytest.raises(ValueError, match="group_batches"):
        batch_for(pre, SEQS, tails, [0, 2], 0, shared=shared)
    batch, past = batch_for(pre, SEQS, [s[5:] for s in SEQS[:2]] + [[], []], [0, 1], 0)  # shared=None: all follow
    assert batch.past_length == 5


def _budget(tok, texts: dict[str, list[str]]) -> int:
    """A token budget that cuts the longer prompts of several languages past the template, not all of them."""
    lengths = sorted(len(s) for ts in texts.values() for s in encode_prompts(tok, ts))
    budget = lengths[len(lengths) // 2]
    cut = [lang for lang, ts in texts.items() if len({len(s) > budget for s in encode_prompts(tok, ts)}) == 2]
    assert len(cut) >= 2, cut  # a step then runs the cut prompts of two languages in one forward
    return budget


def _cut_some(model, tok, texts, budget) -> None:
    ids = [s for ts in texts.values() for s in encode_prompts(tok, ts, budget)]
    head, tails = split(ids, partial=True)
    shared = sharing(ids, tails)
    assert len(head) >= 4 and any(shared) and not all(shared)  # else the tests below compare a path with itself
    assert common_prefix_length(ids) == 0


def test_probe_and_cache_of_cut_prompts_equal_whole_prompts(arch, parallel_data):
    from lensml.data.loaders import load_rows, load_texts
    from lensml.lens.probing import ProbeConfig, probe
    from lensml.lens.reference_cache import build_cache, empty_cache
    from lensml.runtime.topblock import TopBlock
    from lensml.training import TrainConfig

    model, tok = arch
    langs = ["en", "zh", "sw"]
    texts, rows = load_texts(str(parallel_data), langs), load_rows(str(parallel_data), langs)
    budget = _budget(tok, texts)
    _cut_some(model, tok, texts, budget)
    tcfg = TrainConfig(batch_size=4, start_layer=-2, max_length=budget)
    shared = probe(model, tok, texts, "en", ProbeConfig(batch_size=4, max_length=budget))
    whole = probe(model, tok, texts, "en", ProbeConfig(batch_size=4, max_length=budget, share_prefix=False))
    torch.testing.assert_close(shared.means, whole.means, rtol=1e-5, atol=1e-5)
    one_pass = empty_cache(model, tok, rows, langs, "en", tcfg)
    assert one_pass.prefix >= 4 and not all(s for lang in langs for s in one_pass.shared[lang])
    probe(model, tok, texts, "en", ProbeConfig(batch_size=4, max_length=budget), cache=one_pass)
    reference = empty_cache(model, tok, rows, langs, "en", tcfg).fill(TopBlock(model, -2), 4, share_prefix=False)
    two_pass = build_cache(model, tok, rows, langs, "en", tcfg)
    for cache in (one_pass, two_pass):
        assert_caches_match(cache, reference, langs)


def test_training_on_cut_prompts_with_the_prefix_equals_whole_prompts(arch, parallel_data):
    """LENS steps where some prompts follow the prefix and others run whole: the losses and gradients of
    whole prompts (the agnostic term pairs row i of each language with row i of English, so rows put
    back out of order would show), and the same trained weights."""
    from lensml.data.loaders import load_rows, load_texts
    from lensml.lens.losses import LensObjective, LossConfig
    from lensml.lens.probing import ProbeConfig, probe
    from lensml.lens.reference_cache import build_cache
    from lensml.methods.lens import micro_step, size_defaults, train
    from lensml.runtime.topblock import TopBlock
    from lensml.training import TrainConfig

    model, tok = arch
    langs = ["en", "zh", "sw"]
    texts = load_texts(str(parallel_data), langs)
    budget = _budget(tok, texts)
    sub = probe(model, tok, texts, "en", ProbeConfig(batch_size=5, max_length=budget))
    rows = load_rows(str(parallel_data), langs)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    results, weights, grads = {}, {}, {}
    for shared in (True, False):
        model.load_state_dict(original)
        cfg = TrainConfig(lr=3e-3, epochs=2, batch_size=8, start_layer=-3, share_prefix=shared, max_length=budget,
                          loss=LossConfig(lambdas={"zh": 2.0, "sw": 1.0}, retain="both", lambda3=1.0))
        cache = build_cache(model, tok, rows, langs, "en", cfg)
        flags = [s for lang in langs for s in cache.shared[lang]]
        assert (bool(cache.prefix) and any(flags) and not all(flags)) if shared else not any(flags)
        block = TopBlock(model, cfg.start_layer, as_tuple=cache.as_tuple)
        objective = LensObjective.from_subspace(sub, langs, "en", size_defaults(cfg, 10**6).loss, "cpu")
        for p in block.parameters():
            p.requires_grad_(True)
        micro_step(block, cache, objective, [5, 0, 3, 7, 1], langs, "cpu", 1.0)  # rows out of order on purpose
        grads[shared] = [p.grad.clone() for p in block.parameters()]
        for p in block.parameters():
            p.grad = None
            p.requires_grad_(False)
        results[shared] = train(model, tok, sub, rows, langs, "en", cfg, cache=cache)
        weights[shared] = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(original)
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    for a, b in zip(results[True].history, results[False].history):
        for term in ("loss", "agnostic", "specific", "retain"):
            assert a[term] == pytest.approx(b[term], rel=1e-4, abs=1e-6), term
    moved = 0
    for k in original:  # Adam divides by the gradient's own scale: a near-zero gradient's rounding shows
        torch.testing.assert_close(weights[True][k], weights[False][k], rtol=1e-4, atol=3e-4)  # lr 3e-3 a step
        moved += not torch.equal(weights[True][k], original[k])
    assert moved > 0
