"""The shared template prefix runs once: same states, cache, answers and NLL as whole prompts."""

import pytest
import torch

from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.shared_prefix import common_prefix_length, split
from lensml.runtime.templating import encode_prompts
from tests.helpers import assert_caches_match

PROMPTS = ["Why do cats purr?", "Describe a rainy morning in two sentences.", "什么是质数？", "Name a planet."]


def test_common_prefix_length_leaves_every_sequence_a_token_of_its_own():
    assert common_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]) == 5
    assert common_prefix_length([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]) == 4  # the shorter keeps its last token
    assert common_prefix_length([[1, 2, 3, 9, 9], [1, 2, 3, 8, 8]]) == 0  # 3 < the 4-token minimum
    assert common_prefix_length([[1, 2, 3, 9, 9], [1, 2, 3, 8, 8]], minimum=2) == 3
    assert common_prefix_length([[1, 2, 3, 4, 5, 6]]) == 0  # nothing to share with
    assert split([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]], enabled=False) == ([], [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]])
    assert split([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]) == ([1, 2, 3, 4, 5], [[6], [7]])


def test_suffix_batch_masks_the_padding_between_prefix_and_prompt():
    from lensml.runtime.shared_prefix import Prefix

    pre = Prefix([1, 2, 3], cache=None)
    b = pre.batch([[7], [8, 9]], pad_id=0)
    assert b.input_ids.tolist() == [[0, 7], [8, 9]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]]
    assert b.position_ids.tolist() == [[2, 3], [3, 4]]  # a padded slot repeats the position before it, masked
    assert b.last_index.tolist() == [1, 1] and b.own_mask.tolist() == [[0, 1], [1, 1]]
    assert pre.full_ids(b).tolist() == [[1, 2, 3, 0, 7], [1, 2, 3, 8, 9]]


def test_the_tiny_templates_do_share_a_prefix(arch):
    from lensml.runtime.shared_prefix import fits_window

    model, tok = arch
    ids = encode_prompts(tok, PROMPTS)
    head, _ = split(ids)
    assert len(head) >= 4  # otherwise the tests below would compare a path with itself
    assert fits_window(model, max(len(s) for s in ids) + 8)


def test_a_window_shorter_than_the_sequences_keeps_whole_prompts(tiny_gemma3):
    """Sliding windows count cache slots: padding after a shared prefix would change what a window sees."""
    from lensml.runtime.generation import generate_answers
    from lensml.runtime.shared_prefix import fits_window

    model, tok, _ = load_model(ModelConfig(model=str(tiny_gemma3)))  # window 6
    assert not fits_window(model, 6) and fits_window(model, 5)
    from lensml.runtime.shared_prefix import shareable

    short = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]]
    assert shareable(model, short) and not shareable(model, short, extra=1)  # generated tokens count too
    assert not shareable(model, short, enabled=False) and not shareable(model, [])
    assert generate_answers(model, tok, PROMPTS, 6, 3) == generate_answers(model, tok, PROMPTS, 6, 3, share_prefix=False)


def test_probe_and_cache_with_a_shared_prefix_equal_whole_prompts(arch, parallel_data):
    from lensml.runtime.topblock import TopBlock
    from lensml.lens.reference_cache import build_cache, empty_cache
    from lensml.data.loaders import load_rows, load_texts
    from lensml.lens.probing import ProbeConfig, probe
    from lensml.training import TrainConfig

    model, tok = arch
    langs = ["en", "zh", "sw"]
    texts, rows = load_texts(str(parallel_data), langs), load_rows(str(parallel_data), langs)
    tcfg = TrainConfig(batch_size=4, start_layer=-2)
    shared = probe(model, tok, texts, "en", ProbeConfig(batch_size=4))
    whole = probe(model, tok, texts, "en", ProbeConfig(batch_size=4, share_prefix=False))
    torch.testing.assert_close(shared.means, whole.means, rtol=1e-5, atol=1e-5)
    one_pass = empty_cache(model, tok, rows, langs, "en", tcfg)
    probe(model, tok, texts, "en", ProbeConfig(batch_size=4), cache=one_pass)
    reference = empty_cache(model, tok, rows, langs, "en", tcfg).fill(TopBlock(model, -2), 4, share_prefix=False)
    two_pass = build_cache(model, tok, rows, langs, "en", tcfg)
    for cache in (one_pass, two_pass):
        assert_caches_match(cache, reference, langs)


def test_generation_and_nll_with_a_shared_prefix_equal_whole_prompts(arch):
    from lensml.runtime.generation import answer_nll, generate_answers

    model, tok = arch
    shared = generate_answers(model, tok, PROMPTS, max_new_tokens=8, batch_size=3)
    whole = generate_answers(model, tok, PROMPTS, max_new_tokens=8, batch_size=3, share_prefix=False)
    assert shared == whole
    answers = ["Because they are content.", "Grey sky, wet streets.", "只能被一和自身整除的数。", "Mars."]
    assert answer_nll(model, tok, PROMPTS, answers, batch_size=3) == pytest.approx(
        answer_nll(model, tok, PROMPTS, answers, batch_size=3, share_prefix=False), rel=1e-5)


def test_training_with_a_shared_prefix_equals_whole_prompts(arch, parallel_data):
    """LENS steps with the template prefix run once per step: same losses, gradients and weights."""
    from lensml.lens.reference_cache import build_cache
    from lensml.data.loaders import load_rows, load_texts
    from lensml.lens.losses import LossConfig
    from lensml.methods.lens import train
    from lensml.lens.probing import ProbeConfig, probe
    from lensml.training import TrainConfig

    model, tok = arch
    langs = ["en", "zh", "sw"]
    sub = probe(model, tok, load_texts(str(parallel_data), langs), "en", ProbeConfig(batch_size=5))
    rows = load_rows(str(parallel_data), langs)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    results, weights = {}, {}
    for shared in (True, False):
        model.load_state_dict(original)
        cfg = TrainConfig(lr=3e-3, epochs=2, batch_size=8, start_layer=-3, share_prefix=shared,
                          loss=LossConfig(lambdas={"zh": 2.0, "sw": 1.0}, retain="both", lambda3=1.0))
        cache = build_cache(model, tok, rows, langs, "en", cfg)
        assert bool(cache.prefix) == shared and (not shared or cache.prefix >= 4)
        results[shared] = train(model, tok, sub, rows, langs, "en", cfg, cache=cache)
        weights[shared] = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(original)
    for a, b in zip(results[True].history, results[False].history):
        for term in ("loss", "agnostic", "specific", "retain"):
            assert a[term] == pytest.approx(b[term], rel=1e-4, abs=1e-6), term
    moved = 0
    for k in original:
        torch.testing.assert_close(weights[True][k], weights[False][k], rtol=1e-4, atol=1e-5)
        moved += not torch.equal(weights[True][k], original[k])
    assert moved > 0


@pytest.mark.parametrize("name", ["xsft", "xsft-full", "qalign"])
def test_fine_tuning_with_a_shared_prefix_equals_whole_sequences(name, arch, tmp_path):
    """The baselines run the examples' template prefix once per pass: same losses and weights."""
    from lensml import methods
    from lensml.data.loaders import load_rows
    from lensml.methods.base import MethodInputs
    from lensml.training import TrainConfig
    from tests.helpers import write_parallel_data

    model, tok = arch
    data = write_parallel_data(tmp_path / "qa.jsonl", repeat=2, responses=True)
    rows = load_rows(str(data), ["en", "zh"], responses=["en", "zh"])
    inputs = MethodInputs(rows, ["en", "zh"], "en", None, None, [r["responses"] for r in rows])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    results, weights = {}, {}
    for shared in (True, False):
        model.load_state_dict(original)
        results[shared] = methods.get(name).train(model, tok, inputs, TrainConfig(lr=1e-2, batch_size=4,
                                                                                 share_prefix=shared))
        weights[shared] = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(original)
    assert [h["loss"] for h in results[True].history] == pytest.approx([h["loss"] for h in results[False].history],
                                                                       rel=1e-4)
    for k in original:  # Adam divides by the gradient's own scale: a near-zero gradient's rounding shows
        torch.testing.assert_close(weights[True][k], weights[False][k], rtol=1e-4, atol=5e-4)  # lr 1e-2 a step
    assert any(not torch.equal(weights[True][k], original[k]) for k in original)


def test_sft_examples_share_the_template_prefix(arch):
    from lensml.methods.sft import Examples, encode_pair, shared_length

    model, tok = arch
    pairs = [encode_pair(tok, p, "An answer.", 128, 64) for p in PROMPTS]
    ex = Examples([[p[0]] for p in pairs], [[p[1]] for p in pairs])
    assert shared_length(model, ex, True) == len(split(encode_prompts(tok, PROMPTS))[0]) >= 4
    assert shared_length(model, ex, False) == 0


def test_the_cache_goes_by_the_name_the_forward_takes():
    """transformers renamed past_key_values to cache; older 5.x versions take only the old name."""
    from types import SimpleNamespace

    from lensml.runtime.shared_prefix import output_cache, past_kwargs

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            return input_ids

    assert past_kwargs(Old(), "kv") == {"past_key_values": "kv"} and past_kwargs(New(), "kv") == {"cache": "kv"}
    assert past_kwargs(New(), None) == {}
    assert output_cache(SimpleNamespace(cache="a", past_key_values="b")) == "a"
    assert output_cache(SimpleNamespace(past_key_values="b")) == "b"
