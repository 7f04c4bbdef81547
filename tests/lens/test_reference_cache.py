"""The reference cache: filled in the probing pass or on its own, for one start layer or several at once."""

import pytest
import torch

from lensml.runtime.models import ModelConfig, load_model
from tests.helpers import assert_caches_match


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma3"])
def test_one_pass_equals_two_passes(arch, parallel_data, request):
    """When probe and training prompts coincide, the probing forward fills the reference cache: same
    subspace and same cached states as probing and caching separately (exactly, on CPU float32)."""
    from lensml.data.loaders import load_rows, load_texts
    from lensml.lens.probing import ProbeConfig, probe, shares_prompts
    from lensml.lens.reference_cache import build_cache, empty_cache
    from lensml.training import TrainConfig

    model, tok, _ = load_model(ModelConfig(model=str(request.getfixturevalue(arch))))
    langs = ["en", "zh", "sw"]
    texts, rows = load_texts(str(parallel_data), langs), load_rows(str(parallel_data), langs)
    pcfg, tcfg = ProbeConfig(batch_size=16), TrainConfig(batch_size=8)  # equal batches: bit-equal states
    assert shares_prompts(texts, pcfg, rows, tcfg, langs)
    assert not shares_prompts(texts, ProbeConfig(max_length=64), rows, tcfg, langs)
    assert not shares_prompts(texts, pcfg, rows, TrainConfig(samples=5), langs)
    two_sub = probe(model, tok, texts, "en", pcfg)
    two_cache = build_cache(model, tok, rows, langs, "en", tcfg)
    one_cache = empty_cache(model, tok, rows, langs, "en", tcfg)
    one_sub = probe(model, tok, texts, "en", pcfg, cache=one_cache)
    assert one_cache.complete and one_cache.as_tuple == two_cache.as_tuple and one_cache.start == two_cache.start
    assert torch.equal(one_sub.means, two_sub.means) and torch.equal(one_sub.specific, two_sub.specific)
    assert_caches_match(one_cache, two_cache, langs, exact=True)


def test_one_pass_fills_the_caches_of_several_start_layers(tiny_llama, parallel_data):
    """A layer sweep's caches (one per start layer) come from one forward, equal to one pass each."""
    from dataclasses import replace

    from lensml.data.loaders import load_rows
    from lensml.lens.reference_cache import build_cache, empty_cache, fill_caches
    from lensml.training import TrainConfig

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    langs, rows = ["en", "zh"], load_rows(str(parallel_data), ["en", "zh"])
    cfgs = [TrainConfig(batch_size=16, start_layer=s) for s in (-1, -3, 0)]
    together = [empty_cache(model, tok, rows, langs, "en", c) for c in cfgs]
    fill_caches(model, together, 16)
    for cache, cfg in zip(together, cfgs):
        alone = build_cache(model, tok, rows, langs, "en", replace(cfg))
        assert cache.start == alone.start and cache.as_tuple == alone.as_tuple and cache.complete
        assert_caches_match(cache, alone, langs, exact=True, label=(cfg.start_layer,))
    with pytest.raises(ValueError, match="same prompts"):
        fill_caches(model, [together[0], empty_cache(model, tok, rows[:3], langs, "en", cfgs[0])], 16)
