"""The evaluation decoder gives generate()'s greedy answers, and the log-probabilities a teacher-forced pass gives."""

import itertools

import pytest
import torch

from lensml.runtime import decoding
from lensml.runtime.decoding import chunk_plan, greedy
from lensml.runtime.generation import answer_nll, own_nll
from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.templating import encode_prompts

PROMPTS = ["Why do cats purr?", "什么是质数？", "Describe a rainy morning in a small town by the sea, with gulls.",
           "Hi", "Name two planets close to the sun and say which one is hotter, and why.", "为什么天空是蓝色的？"]


def _cost(lengths, chunks, overhead):
    return sum(overhead + len(c) * max(lengths[i] for i in c) for c in chunks)


def test_chunk_plan_groups_by_length_at_least_cost():
    assert chunk_plan([10, 1, 10, 1, 1, 10], overhead=2) == [[1, 3, 4], [0, 2, 5]]
    assert chunk_plan([10, 1, 10, 1, 1, 10], overhead=100) == [[1, 3, 4, 0, 2, 5]]
    torch.manual_seed(0)
    for _ in range(20):
        lengths = torch.randint(0, 30, (7,)).tolist()
        plan = chunk_plan(lengths, overhead=8)
        assert sorted(i for c in plan for i in c) == list(range(7))
        order = sorted(range(7), key=lambda i: lengths[i])
        best = min(_cost(lengths, [order[a:b] for a, b in zip((0, *cuts), (*cuts, 7))], 8)
                   for k in range(7) for cuts in itertools.combinations(range(1, 7), k))
        assert _cost(lengths, plan, 8) == best


def _generate_ids(model, tok, prompts, max_new, stops):
    """transformers' generate() on each prompt alone: the answer ids up to the first stop token, and whether it stopped."""
    out = []
    for ids in prompts:
        x = torch.tensor([ids])
        seq = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new,
                             pad_token_id=tok.pad_token_id, eos_token_id=stops, temperature=None, top_p=None,
                             top_k=None)[0, len(ids):].tolist()
        end = next((k for k, t in enumerate(seq) if t in stops), None)
        out.append((seq if end is None else seq[:end], end is not None))
    return out


def _stops_midway(model, tok, prompts, max_new):
    """eos plus a token some answers write partway through, so that rows stop at different steps."""
    free = _generate_ids(model, tok, prompts, max_new, [tok.eos_token_id])
    counts = {}
    for ids, _ in free:
        for t in set(ids[2:max_new - 2]):
            counts[t] = counts.get(t, 0) + 1
    token = max((t for t, c in counts.items() if c < len(prompts)), key=lambda t: counts[t])
    return [tok.eos_token_id, token]


@pytest.mark.parametrize("share", [True, False])
def test_greedy_gives_the_answers_of_generate(arch, share, monkeypatch):
    model, tok = arch
    prompts = encode_prompts(tok, PROMPTS)
    stops = _stops_midway(model, tok, prompts, 10)
    expected = _generate_ids(model, tok, prompts, 10, stops)
    assert any(s for _, s in expected) and not all(s for _, s in expected)  # some rows stop early, some run out
    for batch_size in (6, 4, 1):
        got = greedy(model, prompts, 10, stops, tok.pad_token_id, batch_size, share_prefix=share)
        assert [(g.ids, g.stopped) for g in got] == expected, batch_size
    monkeypatch.setattr(decoding, "_static_appends", lambda: False)  # transformers before 5.17: DynamicCache
    got = greedy(model, prompts, 10, stops, tok.pad_token_id, 4, share_prefix=share)
    assert [(g.ids, g.stopped) for g in got] == expected


def test_generate_path_for_hooked_models_gives_the_same_answers_and_logprobs(arch):
    model, tok = arch
    prompts = encode_prompts(tok, PROMPTS)
    fast = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 3)
    handle = model.get_decoder().layers[0].register_forward_hook(lambda *_: None)  # a hook that changes nothing
    try:
        slow = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 3)
    finally:
        handle.remove()
    assert [g.ids for g in slow] == [g.ids for g in fast]
    for f, s in zip(fast, slow):
        assert s.logprobs == pytest.approx(f.logprobs, abs=1e-4)


def test_logprobs_are_the_teacher_forced_ones(arch):
    model, tok = arch
    prompts = encode_prompts(tok, PROMPTS)
    got = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 4)
    for ids, g in zip(prompts, got):
        full = torch.tensor([ids + g.ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=full).logits[0].double(), -1)
        want = [logp[len(ids) - 1 + k, t].item() for k, t in enumerate(g.ids)]
        assert g.logprobs == pytest.approx(want, abs=1e-4)
        assert max(g.logprobs) <= 0 and len(g.logprobs) == len(g.ids)
    # the NLL of a model's own answers from their log-probabilities = the teacher-forced NLL of their ids
    nll = answer_nll(model, tok, PROMPTS, answer_ids=[g.ids for g in got])
    assert own_nll(got) == pytest.approx(nll, rel=1e-5)


def test_prefill_chunks_and_padding_do_not_leak(tiny_llama):
    """A short prompt batched beside long ones (several prefill chunks, wide padding) answers as alone."""
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = encode_prompts(tok, ["Hi", "What is it?", " ".join(["long"] * 60), " ".join(["longer"] * 90)])
    assert len(chunk_plan([len(p) for p in prompts])) > 1
    together = greedy(model, prompts, 6, [tok.eos_token_id], tok.pad_token_id, 4)
    alone = [greedy(model, [p], 6, [tok.eos_token_id], tok.pad_token_id, 1)[0] for p in prompts]
    assert [g.ids for g in together] == [g.ids for g in alone]


@pytest.mark.parametrize("share", [True, False])
def test_captured_states_are_the_layer_inputs_of_a_whole_forward(arch, share):
    """Generation.states = layer `start`'s inputs at prompt + answer[:-1], as one unpadded forward computes them."""
    from lensml.runtime.topblock import TopBlock
    from lensml.runtime.templating import pad

    model, tok = arch
    prompts = encode_prompts(tok, PROMPTS)
    stops = _stops_midway(model, tok, prompts, 8)
    got = greedy(model, prompts, 8, stops, tok.pad_token_id, 4, share_prefix=share, capture=2)
    assert any(g.stopped for g in got)
    block = TopBlock(model, 2)
    for ids, g in zip(prompts, got):
        seq = ids + g.ids[:-1]
        h_in, _ = block.full(pad([seq], tok.pad_token_id))
        assert g.states.shape == (len(seq), h_in.shape[-1])
        torch.testing.assert_close(g.states, h_in[0], rtol=1e-4, atol=1e-5)
    assert decoding.decoder_of(model).layers[2]._forward_pre_hooks == {}  # the capture hook is gone


def test_nll_from_captured_states_equals_a_full_forward_when_only_top_layers_changed(arch):
    model, tok = arch
    prompts = encode_prompts(tok, PROMPTS)
    got = greedy(model, prompts, 8, [tok.eos_token_id], tok.pad_token_id, 6, capture=2)
    ids, states = [g.ids for g in got], [g.states for g in got]
    from lensml.runtime.generation import answer_nll_from_states

    base = answer_nll(model, tok, PROMPTS, answer_ids=ids)
    assert answer_nll_from_states(model, 2, prompts, ids, states, batch_size=4) == pytest.approx(base, rel=1e-5)
    layers = model.get_decoder().layers
    saved = {k: v.clone() for k, v in layers[3].state_dict().items()}
    try:
        with torch.no_grad():
            for p in layers[3].parameters():
                p.add_(0.05 * torch.randn_like(p))
        changed = answer_nll(model, tok, PROMPTS, answer_ids=ids)
        assert abs(changed / base - 1) > 1e-3  # the change is visible to the NLL
        assert answer_nll_from_states(model, 2, prompts, ids, states, batch_size=4) == pytest.approx(changed, rel=1e-5)
    finally:
        layers[3].load_state_dict(saved)
