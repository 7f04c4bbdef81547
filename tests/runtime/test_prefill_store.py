"""A kept prefill serves a model that differs only in its top layers with the very answers a full prefill gives."""

import pytest
import torch

from lensml.runtime.decoding import chunk_plan, greedy
from lensml.runtime.models import decoder_of
from lensml.runtime.prefill_store import PrefillStore
from lensml.runtime.templating import encode_prompts

PROMPTS = ["Why do cats purr?", "什么是质数？", "Describe a rainy morning in a small town by the sea, with gulls.",
           "Hi", "Name two planets close to the sun and say which one is hotter, and why.", "为什么天空是蓝色的？",
           " ".join(["long"] * 40)]
START = 2


class _Calls:
    """Counts the tokens one layer runs (its forward wrapped: a hook would send greedy to generate())."""

    def __init__(self, layer):
        self.tokens, self.layer, forward = 0, layer, layer.forward

        def counted(hidden_states, *args, **kwargs):
            self.tokens += hidden_states.shape[0] * hidden_states.shape[1]
            return forward(hidden_states, *args, **kwargs)

        layer.forward = counted

    def remove(self):
        del self.layer.forward


def _perturb(layer, scale=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))


def _answers(gens):
    return [(g.ids, g.stopped, g.logprobs) for g in gens]


@pytest.mark.parametrize("share", [True, False])
def test_reused_prefill_gives_the_full_prefills_answers_bit_for_bit(arch, share):
    model, tok = arch
    prompts = encode_prompts(tok, PROMPTS)
    assert len(chunk_plan([len(p) - 1 for p in prompts])) > 1  # several chunks, padding inside them
    layers = decoder_of(model).layers
    saved = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in layers]
    try:
        store = PrefillStore(START)
        base = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 4, share_prefix=share, keep=store)
        plain_base = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 4, share_prefix=share)
        assert _answers(base) == _answers(plain_base)  # keeping changes nothing
        assert len(store) > 2  # chunks kept
        for layer in layers[START:]:
            _perturb(layer)
        full = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 4, share_prefix=share)
        assert [g.ids for g in full] != [g.ids for g in base]  # the top layers' change shows in the answers
        bottom = _Calls(layers[0])
        reused = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 4, share_prefix=share, reuse=store)
        bottom.remove()
        assert _answers(reused) == _answers(full)  # ids, stops and log-probabilities, exactly
        assert store.served == len(store) + (1 if share else 0)  # every chunk (and the prefix) came from the store
        assert 0 < bottom.tokens <= 8 * len(prompts)  # the lowest layer ran decode steps only, no prompt token
    finally:
        for layer, state in zip(layers, saved):
            layer.load_state_dict(state)


def test_a_saved_store_loads_back_bit_for_bit_and_only_for_its_start_layer(tiny_llama, tmp_path):
    from lensml.runtime.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = encode_prompts(tok, PROMPTS)
    store = PrefillStore(START)
    greedy(model, prompts, 4, [tok.eos_token_id], tok.pad_token_id, 4, keep=store)
    store.save(tmp_path / "kept.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["kept.safetensors"]  # no temporary file left
    back = PrefillStore.load(tmp_path / "kept.safetensors", START)
    assert PrefillStore.load(tmp_path / "kept.safetensors", START + 1) is None
    assert PrefillStore.load(tmp_path / "absent.safetensors", START) is None
    assert back.as_tuple == store.as_tuple and back._prefix[0] == store._prefix[0]
    assert list(back._chunks) == list(store._chunks)
    for a, b in [(store._prefix[1], back._prefix[1])] + [(store._chunks[k], back._chunks[k]) for k in store._chunks]:
        assert torch.equal(a.inputs, b.inputs)
        assert all(torch.equal(x, y) for pair_a, pair_b in zip(a.lower, b.lower) for x, y in zip(pair_a, pair_b))
    for layer in decoder_of(model).layers[START:]:
        _perturb(layer)
    first = greedy(model, prompts, 6, [tok.eos_token_id], tok.pad_token_id, 4, reuse=store)
    again = greedy(model, prompts, 6, [tok.eos_token_id], tok.pad_token_id, 4, reuse=back)
    assert _answers(again) == _answers(first) and back.served == store.served > 0
