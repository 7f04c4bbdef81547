import math
from types import SimpleNamespace

import pytest
import torch

from lensml.evaluation.scoring import (ItemResult, _argmax, ScoringConfig, accuracy, encode_pair, letter_prompt,
                                       letter_token_ids, loglik_requests, loglik_results, loglik_scores, score_letter,
                                       score_loglik)
from lensml.evaluation.tasks import TaskSpec, load_items
from lensml.runtime.templating import render, tokenize_rendered


def _all_items(fixtures):
    specs = [TaskSpec("xcopa", "zh", str(fixtures / "xcopa" / "val.zh.jsonl")),
             TaskSpec("xcopa", "sw", str(fixtures / "xcopa" / "val.sw.jsonl")),
             TaskSpec("xwinograd", "zh", str(fixtures / "xwinograd" / "zh.jsonl")),
             TaskSpec("xstorycloze", "zh", str(fixtures / "xstorycloze" / "zh.jsonl")),
             TaskSpec("m_mmlu", "zh", str(fixtures / "m_mmlu" / "zh_test.json"))]
    return [item for spec in specs for item in load_items(spec)[0]]


def test_lm_eval_prompts(fixtures):
    items = _all_items(fixtures)
    by = {(i.task, i.lang): i for i in reversed(items)}  # first item of each task/language
    pairs, norms = loglik_requests(by["xcopa", "zh"])
    assert pairs == [("我把冰淇淋放在太阳下 所以", " 冰淇淋融化了。"), ("我把冰淇淋放在太阳下 所以", " 冰淇淋变硬了。")]
    assert norms == ["冰淇淋融化了。", "冰淇淋变硬了。"]
    pairs, _ = loglik_requests(by["xcopa", "sw"])
    assert pairs[0] == ("Mvua ilinyesha usiku kucha kwa hiyo", " barabara zilijaa maji.")
    pairs, norms = loglik_requests(by["xwinograd", "zh"])
    assert pairs == [("猫追着老鼠跑，因为猫", " 饿了。"), ("猫追着老鼠跑，因为老鼠", " 饿了。")] and norms[1] == "猫追着老鼠跑，因为老鼠"
    pairs, _ = loglik_requests(by["xstorycloze", "zh"])
    assert pairs[1] == ("小李早上起床晚了。 他急忙穿好衣服。 他跑到了车站。 公交车刚刚开走。", " 他在车上睡着了。")
    pairs, norms = loglik_requests(by["m_mmlu", "zh"])
    assert pairs[2] == ("在标准大气压下，水的沸点是多少摄氏度？\nA. 50\nB. 100\nC. 150\nD. 200\nAnswer:", " C")
    assert norms == ["A", "B", "C", "D"]
    text, n = letter_prompt(by["m_mmlu", "zh"])
    assert n == 4 and text.endswith("Answer with A, B, C or D only.") and "\nD. 200\n" in text
    text, n = letter_prompt(by["xcopa", "zh"])
    assert n == 2 and "more plausible effect" in text and "\nB. 冰淇淋变硬了。\n" in text and text.endswith("A or B only.")


def test_encode_pair_moves_trailing_space_and_splits_the_joint_encoding(tiny):
    _, tok = tiny
    assert encode_pair(tok, "Why do cats ", "purr?") == encode_pair(tok, "Why do cats", " purr?")
    ctx, cont = encode_pair(tok, "Why do cats", " purr?")
    assert ctx + cont == tok("Why do cats purr?", add_special_tokens=False)["input_ids"]
    ctx_bos, cont_bos = encode_pair(tok, "Why do cats", " purr?", add_bos=True)
    assert ctx_bos == [tok.bos_token_id] + ctx and cont_bos == cont


def test_loglik_matches_an_independent_forward(tiny):
    model, tok = tiny
    pairs = [("Why do cats", " purr?"), ("描述一个下雨的", "早晨。"), ("Name two planets", " near the sun.")]
    got = loglik_scores(model, tok, pairs, ScoringConfig(batch_size=3))
    # a continuation the model would produce itself, so lm-eval's is_greedy is true for one pair at least
    with torch.no_grad():
        ids = tok("Why do cats", add_special_tokens=False)["input_ids"]
        for _ in range(3):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    greedy_text = tok.decode(ids[len(tok("Why do cats", add_special_tokens=False)["input_ids"]):])
    pairs.append(("Why do cats", greedy_text))
    flags = [g for _, g in loglik_results(model, tok, pairs, ScoringConfig(batch_size=2))]
    for (context, continuation), value, flag in zip(pairs, got + [None], flags):
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
        if value is not None:
            expected = sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))
            assert value == pytest.approx(expected, abs=1e-4)
        assert flag == all(int(logp[t - 1].argmax()) == whole[t] for t in range(len(ctx), len(whole)))
    assert flags[-1] is True and flags[0] is False


@pytest.mark.parametrize("mode", ["loglik", "letter"])
def test_batched_scores_equal_one_at_a_time(tiny, fixtures, mode):
    model, tok = tiny
    items = _all_items(fixtures)
    score = score_loglik if mode == "loglik" else score_letter
    batched = score(model, tok, items, ScoringConfig(mode=mode, batch_size=8))
    single = [score(model, tok, [item], ScoringConfig(mode=mode, batch_size=1))[0] for item in items]
    assert len(batched) == len(items) == 15
    for b, s in zip(batched, single):
        assert b.scores == pytest.approx(s.scores, abs=1e-4)
        assert (b.pred, b.pred_norm) == (s.pred, s.pred_norm)


class LengthKeyedLM(torch.nn.Module):
    """Hand-built logits: a non-letter token always wins overall, and among the letters the one at
    index (prompt length % 4) gets the highest logit, so predictions depend on which row is which."""

    def __init__(self, vocab: int, letters: list[int], distractor: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.letters, self.distractor = vocab, letters, distractor

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):
        logits = torch.zeros(input_ids.shape[0], logits_to_keep, self.vocab)
        logits[:, :, self.distractor] = 100.0
        for row, length in enumerate(attention_mask.sum(1).tolist()):
            for k, tid in enumerate(self.letters):
                logits[row, -1, tid] = 10.0 if k == length % 4 else -float(k)
        return SimpleNamespace(logits=logits)


def test_letter_mode_picks_the_highest_letter_logit(tiny, fixtures):
    _, tok = tiny
    items = _all_items(fixtures)
    letters = letter_token_ids(tok, 4)
    fake = LengthKeyedLM(len(tok), letters, distractor=tok("Why", add_special_tokens=False)["input_ids"][0])
    results = score_letter(fake, tok, items, ScoringConfig(mode="letter", batch_size=5))
    for item, result in zip(items, results):
        text, n = letter_prompt(item)
        favourite = len(tokenize_rendered(tok, render(tok, text))) % 4
        assert result.pred == (favourite if favourite < n else 0)
        assert len(result.scores) == n and result.pred_norm is None


def test_accuracy_and_standard_error():
    results = [ItemResult(0, [1.0, 0.0], 0, 0, 0), ItemResult(1, [1.0, 0.0], 0, 1, 1),
               ItemResult(1, [0.0, 2.0], 1, 1, 1), ItemResult(0, [3.0, 3.0], 0, 0, 0)]
    metrics = accuracy(results)
    assert metrics["acc"]["value"] == 0.75 and metrics["acc_norm"]["value"] == 1.0
    assert metrics["acc"]["stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    letter = accuracy([ItemResult(1, [0.0, 1.0], 1)])
    assert set(letter) == {"acc"} and letter["acc"]["stderr"] is None


def test_ties_go_to_the_first_choice():
    assert _argmax([3.0, 3.0]) == 0 and _argmax([1.0, 2.0, 2.0]) == 1 and _argmax([-1.0, -0.5]) == 1


def test_acc_norm_divides_by_characters_not_tokens(tiny, monkeypatch):
    """Fixed log-likelihoods on choices whose character, byte and token counts rank them differently:
    acc_norm is lm-eval's per-character score, acc_bytes per UTF-8 byte, acc the raw sum."""
    from lensml.evaluation import scoring
    from lensml.evaluation.benchmarks.base import MCItem

    model, tok = tiny
    choices = {"a": ["Why do cats purr?", "ẞẞ"], "b": ["猫", "qzxj"]}  # chars 17|2, 1|4; tokens 9|6, 3|4; bytes 17|6, 3|4
    counts = [[len(tok(c, add_special_tokens=False)["input_ids"]) for c in cs] for cs in choices.values()]
    assert counts == [[9, 6], [3, 4]]  # so a per-token division would rank both items the other way
    scores = {"Why do cats purr?": -10.0, "ẞẞ": -3.0, "猫": -2.0, "qzxj": -6.0}
    monkeypatch.setattr(scoring, "loglik_requests", lambda item: ([("ctx", " " + c) for c in choices[item.doc["id"]]],
                                                                  choices[item.doc["id"]]))
    monkeypatch.setattr(scoring, "loglik_results", lambda _m, _t, pairs, *a, **k: [(scores[c[1:]], False) for _, c in pairs])
    items = [MCItem("xcopa", "zh", {"id": "a"}, 0, "a"), MCItem("xcopa", "zh", {"id": "b"}, 1, "b")]
    results = score_loglik(model, tok, items, ScoringConfig())
    assert [(r.pred, r.pred_norm, r.pred_bytes) for r in results] == [(1, 0, 1), (0, 1, 0)]
    assert results[0].scores == [-10.0, -3.0]
    metrics = accuracy(results)
    assert (metrics["acc"]["value"], metrics["acc_norm"]["value"], metrics["acc_bytes"]["value"]) == (0.0, 1.0, 0.0)
