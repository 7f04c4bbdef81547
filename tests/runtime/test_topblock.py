"""The cached top-block forward must equal the model's full forward."""

import pytest
import torch

from lensml.runtime.topblock import TopBlock
from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.templating import encode_prompts, gather_last, pad
from tests.helpers import SENTENCES


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma3"])
@pytest.mark.parametrize("start", [-1, -2, 1])
def test_cached_path_equals_full_forward(arch, start, request):
    model, tok, _ = load_model(ModelConfig(model=str(request.getfixturevalue(arch))))
    ids = encode_prompts(tok, SENTENCES["zh"][:3] + SENTENCES["en"][:3])  # unequal lengths: padding
    batch = pad(ids, tok.pad_token_id, "left")
    block = TopBlock(model, start)
    h_in, final = block.full(batch)
    cached = block.forward(batch, h_in)
    mask = batch.attention_mask.bool()
    assert torch.allclose(cached[mask], final[mask], atol=1e-5)
    # The model itself is untouched afterwards: its layers are the real ones again.
    again = block.decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).last_hidden_state
    assert torch.allclose(again[mask], final[mask], atol=1e-6)
    # Gradients reach the trained block only through the cached path.
    cached = block.forward(batch, h_in)
    gather_last(cached, batch.attention_mask).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    assert all(p.grad is None for layer in list(block.decoder.layers)[:block.start] for p in layer.parameters())


def test_cached_path_runs_fewer_layers(tiny_llama):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    batch = pad(encode_prompts(tok, SENTENCES["en"][:2]), tok.pad_token_id)
    block = TopBlock(model, -1)
    h_in, _ = block.full(batch)
    calls = []
    hooks = [layer.register_forward_hook(lambda m, a, o: calls.append(1)) for layer in block.decoder.layers]
    block.forward(batch, h_in)
    for h in hooks:
        h.remove()
    assert len(calls) == 1


def test_start_layer_out_of_range(tiny_llama):
    from lensml.errors import LensError
    model, _, _ = load_model(ModelConfig(model=str(tiny_llama)))
    with pytest.raises(LensError, match="outside the model's 4 decoder layers"):
        TopBlock(model, 4)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma3"])
def test_one_pass_equals_two_passes(arch, parallel_data, request):
    """When probe and training prompts coincide, the probing forward fills the reference cache: same
    subspace and same cached states as probing and caching separately (exactly, on CPU float32)."""
    from lensml.lens.reference_cache import build_cache, empty_cache
    from lensml.data.loaders import load_rows, load_texts
    from lensml.lens.probing import ProbeConfig, probe, shares_prompts
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
    for lang in langs:
        for store in ("hidden", "last", "mean"):
            for a, b in zip(getattr(one_cache, store)[lang], getattr(two_cache, store)[lang]):
                assert torch.equal(a, b), (lang, store)


def test_one_pass_fills_the_caches_of_several_start_layers(tiny_llama, parallel_data):
    """A layer sweep's caches (one per start layer) come from one forward, equal to one pass each."""
    from dataclasses import replace

    from lensml.lens.reference_cache import build_cache, empty_cache, fill_caches
    from lensml.data.loaders import load_rows
    from lensml.training import TrainConfig

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    langs, rows = ["en", "zh"], load_rows(str(parallel_data), ["en", "zh"])
    cfgs = [TrainConfig(batch_size=16, start_layer=s) for s in (-1, -3, 0)]
    together = [empty_cache(model, tok, rows, langs, "en", c) for c in cfgs]
    fill_caches(model, together, 16)
    for cache, cfg in zip(together, cfgs):
        alone = build_cache(model, tok, rows, langs, "en", replace(cfg))
        assert cache.start == alone.start and cache.as_tuple == alone.as_tuple and cache.complete
        for lang in langs:
            for store in ("hidden", "last", "mean"):
                for a, b in zip(getattr(cache, store)[lang], getattr(alone, store)[lang]):
                    assert torch.equal(a, b), (cfg.start_layer, lang, store)
    with pytest.raises(ValueError, match="same prompts"):
        fill_caches(model, [together[0], empty_cache(model, tok, rows[:3], langs, "en", cfgs[0])], 16)
