"""answer_nll against a hand computation; answers cut at the token limit end on a whole character."""

import pytest
import torch

from lensml.runtime.generation import _stop_ids, answer_nll, decode_answer, generate_answers

PROMPTS = ["Why do cats purr?", "Describe a rainy morning.", "什么是质数？"]
ANSWERS = ["Because they are happy.", "Grey sky and wet streets.", "只能被一和自身整除的数。"]


def _hand_nll(model, tok, prompts, answers):
    """Each prompt + answer alone, unpadded: -log p(answer token | everything before it), averaged over tokens."""
    total, count = 0.0, 0
    for p, a in zip(prompts, answers):
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        answer_ids = tok(a, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        for t in range(len(prompt_ids), ids.shape[1]):  # logits at t-1 predict token t
            total -= logp[t - 1, ids[0, t]].item()
            count += 1
    return total / count


def test_answer_nll_matches_a_hand_computation(tiny):
    model, tok = tiny
    expected = _hand_nll(model, tok, PROMPTS, ANSWERS)
    assert answer_nll(model, tok, PROMPTS, ANSWERS, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert answer_nll(model, tok, PROMPTS, ANSWERS, batch_size=1) == pytest.approx(expected, rel=1e-5)
    # an empty answer has no tokens to score and does not count
    assert answer_nll(model, tok, [*PROMPTS, "Hi?"], [*ANSWERS, ""]) == pytest.approx(expected, rel=1e-5)


CHINESE = "怎样让罗勒保持新鲜"


def _cut_mid_character(tok):
    """Ids of CHINESE cut where the decoded text ends in U+FFFD, and the whole characters before the cut."""
    ids = tok(CHINESE, add_special_tokens=False)["input_ids"]
    for k in range(len(ids) - 1, 0, -1):
        text = tok.decode(ids[:k])
        if text.endswith("\ufffd"):
            return ids[:k], text.rstrip("\ufffd")
    pytest.fail("the tokenizer never splits a character across tokens")


def test_decode_answer_drops_a_partial_character_of_a_cut_answer(tiny):
    _, tok = tiny
    ids, whole = _cut_mid_character(tok)
    assert whole and CHINESE.startswith(whole)
    assert decode_answer(tok, ids, cut=True) == whole
    # an answer that stopped on its own keeps what the model wrote
    assert decode_answer(tok, ids, cut=False).endswith("\ufffd")
    full = tok(CHINESE, add_special_tokens=False)["input_ids"]
    assert decode_answer(tok, full, cut=True) == CHINESE


def test_generate_marks_answers_cut_at_the_limit(tiny, monkeypatch):
    """An answer that reaches max_new_tokens without a stop token is cut, and its text is trimmed."""
    import lensml.runtime.generation as generation
    from lensml.runtime.decoding import Generation

    model, tok = tiny
    ids, whole = _cut_mid_character(tok)
    scripted = [Generation(list(ids), False, [0.0] * len(ids)), Generation(list(ids), True, [0.0] * len(ids))]
    monkeypatch.setattr(generation, "greedy", lambda *a, **k: scripted)
    texts, _ = generation.generate(model, tok, ["Hi?", "说出两颗靠近太阳的行星。"], max_new_tokens=len(ids))
    assert texts[0] == whole and texts[1].endswith("\ufffd")


def test_generate_answers_real_model_batched_like_alone(tiny):
    model, tok = tiny
    together = generate_answers(model, tok, PROMPTS, max_new_tokens=6, batch_size=3)
    alone = [generate_answers(model, tok, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert together == alone
    assert tok.eos_token_id in _stop_ids(model, tok)
