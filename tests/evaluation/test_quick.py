"""score_answers: shares, clean fidelity = right language AND not degenerate, and per-answer records."""

import pytest

from lensml.evaluation.quick import score_answers


class ScriptedIdentifier:
    """Gives each answer the language the test wrote for it, so the test controls language identification."""

    def __init__(self, pairs):
        self.codes = dict(pairs)

    def batch(self, texts):
        return [self.codes[t] for t in texts]


PROMPT = "怎样让罗勒保持新鲜？"


def test_clean_fidelity_needs_right_language_and_no_degeneration():
    pairs = [
        ("把罗勒插在一杯清水里，放在阳光不直射的地方，每两天换一次水。", "zh"),  # right, clean
        ("多浇水。多浇水。多浇水。多浇水。多浇水。", "zh"),  # right, loop
        (PROMPT, "zh"),  # right, echo (the answer is the prompt)
        ("Put the basil in a glass of water and keep it out of direct sun.", "en"),  # wrong, clean
        ("Stir it well. Stir it well. Stir it well. Stir it well.", "en"),  # wrong, loop
        ("  ", ""),  # nothing identified, empty
    ]
    answers = {"zh": [a for a, _ in pairs]}
    out = score_answers({"zh": [PROMPT] * 6}, answers, ScriptedIdentifier(pairs))["zh"]
    assert out["n"] == 6
    assert out["detected"] == ["zh", "zh", "zh", "en", "en", ""]
    assert out["fidelity"] == pytest.approx(3 / 6)
    assert out["loop"] == pytest.approx(2 / 6)
    assert out["echo"] == pytest.approx(1 / 6)
    assert out["empty"] == pytest.approx(1 / 6)
    assert out["degenerate"] == pytest.approx(4 / 6)
    # right AND not degenerate: only the first; "or" would count 4 of 6, right alone 3 of 6
    assert out["clean_fidelity"] == pytest.approx(1 / 6)
    records = out["answers"]
    assert [r["clean"] for r in records] == [True, False, False, False, False, False]
    assert [r["right_language"] for r in records] == [True, True, True, False, False, False]
    assert [r["degenerate"] for r in records] == [False, True, True, False, True, True]
    assert records[1] == {"detected": "zh", "echo": False, "loop": True, "empty": False, "degenerate": True,
                          "clean": False, "right_language": True}
    assert records[5]["empty"] and records[2]["echo"] and records[3]["detected"] == "en"


def test_per_language_and_empty_list():
    out = score_answers({"en": ["Hi?"], "zh": []}, {"en": ["Hello, nice to meet you."], "zh": []},
                        ScriptedIdentifier([("Hello, nice to meet you.", "en")]))
    assert out["en"]["clean_fidelity"] == 1.0 and out["en"]["answers"][0]["clean"]
    assert out["zh"]["n"] == 0 and out["zh"]["fidelity"] == 0.0 and out["zh"]["answers"] == []


def test_base_answers_are_reused_only_for_identical_weights_and_decoding(tiny_llama, monkeypatch):
    import torch

    from lensml.evaluation import quick
    from lensml.runtime.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = {"en": ["Why do cats purr?", "What is a prime number?"], "zh": ["猫为什么会发出呼噜声？", "什么是质数？"]}
    cfg = quick.QuickEvalConfig(max_new_tokens=4)
    first = quick.answer_before(model, tok, prompts, "en", cfg)
    calls = []
    real = quick.generate
    monkeypatch.setattr(quick, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = quick.answer_before(model, tok, prompts, "en", cfg)
    assert calls == [] and again.answers == first.answers and again.central_nll == first.central_nll
    assert again.central_ids == first.central_ids and len(first.central_ids) == 2
    # Any change to what the answers depend on is a miss: decoding, prompts, one weight.
    quick.answer_before(model, tok, prompts, "en", quick.QuickEvalConfig(max_new_tokens=5))
    assert len(calls) == 1  # all languages in one decode
    quick.answer_before(model, tok, {**prompts, "zh": prompts["zh"][:1]}, "en", cfg)
    assert len(calls) == 2
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight[0, 0] += 1e-3
    quick.answer_before(model, tok, prompts, "en", cfg)
    assert len(calls) == 3
    quick.answer_before(model, tok, prompts, "en", quick.QuickEvalConfig(max_new_tokens=4, reuse_base=False))
    assert len(calls) == 4


def test_base_nll_from_its_own_tokens_equals_a_teacher_forced_pass(tiny_llama):
    """The retention baseline comes from the log-probabilities of the base model's own greedy tokens;
    the enhanced side scores those same tokens with a forward. On an unchanged model both agree."""
    from lensml.evaluation import quick
    from lensml.runtime.generation import answer_nll, generate_answers
    from lensml.runtime.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = {"en": ["Why do cats purr?", "What is a prime number?", "Hi"], "zh": ["猫为什么会发出呼噜声？", "什么是质数？"]}
    cfg = quick.QuickEvalConfig(max_new_tokens=6, reuse_base=False, batch_size=3)
    before = quick.answer_before(model, tok, prompts, "en", cfg)
    for lang, ps in prompts.items():  # one decode for all languages = each language alone
        assert before.answers[lang] == generate_answers(model, tok, ps, 6, batch_size=5)
    teacher = answer_nll(model, tok, prompts["en"], answer_ids=before.central_ids)
    assert before.central_nll == pytest.approx(teacher, rel=1e-5) and before.central_nll > 0
    after = quick.answer_after(model, tok, before, cfg)
    assert after.answers == before.answers and after.central_nll == pytest.approx(before.central_nll, rel=1e-5)


def test_enhanced_nll_runs_the_top_layers_only_while_the_lower_ones_are_unchanged(tiny_llama, monkeypatch):
    import torch

    from lensml.evaluation import quick
    from lensml.runtime.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = {"en": ["Why do cats purr?", "What is a prime number?", "Hi"], "zh": ["猫为什么会发出呼噜声？"]}
    cfg = quick.QuickEvalConfig(max_new_tokens=6)
    before = quick.answer_before(model, tok, prompts, "en", cfg, start=2)
    assert before.lower == quick.lower_digest(model, 2) and len(before.central_states) == 3
    again = quick.answer_before(model, tok, prompts, "en", cfg, start=2)  # from the cache, states too
    assert again.lower == before.lower
    for a, b in zip(again.central_states, before.central_states):
        assert torch.equal(a, b)
    used = []
    real = quick.answer_nll_from_states
    monkeypatch.setattr(quick, "answer_nll_from_states", lambda *a, **k: used.append(1) or real(*a, **k))
    layers = model.model.layers
    with torch.no_grad():
        layers[3].mlp.down_proj.weight.add_(0.05)  # a trained top layer
    full = quick.answer_nll(model, tok, prompts["en"], answer_ids=before.central_ids)
    after = quick.answer_after(model, tok, before, cfg)
    assert used == [1] and after.central_nll == pytest.approx(full, rel=1e-5) and full != before.central_nll
    with torch.no_grad():
        layers[0].mlp.down_proj.weight.add_(0.05)  # a lower layer changed too: its states no longer hold
    full = quick.answer_nll(model, tok, prompts["en"], answer_ids=before.central_ids)
    after = quick.answer_after(model, tok, before, cfg)
    assert used == [1] and after.central_nll == pytest.approx(full, rel=1e-5)


def test_enhanced_answers_reuse_the_base_prefill_only_while_the_lower_layers_are_unchanged(tiny_llama, caplog):
    import logging

    import torch

    from lensml.evaluation import quick
    from lensml.runtime.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = {"en": ["Why do cats purr?", "What is a prime number, and why are there infinitely many?", "Hi"],
               "zh": ["猫为什么会发出呼噜声？", "什么是质数？"]}
    cfg = quick.QuickEvalConfig(max_new_tokens=6, batch_size=3)
    plain = quick.QuickEvalConfig(max_new_tokens=6, batch_size=3, reuse_prefill=False)
    before = quick.answer_before(model, tok, prompts, "en", cfg, start=2)
    store = before.prefill
    assert store is not None and len(store) > 0 and store.served == 0
    cached = quick.answer_before(model, tok, prompts, "en", cfg, start=2).prefill  # from the disk cache, beside the answers
    assert cached is not None and cached is not store and len(cached) == len(store)
    assert quick.answer_before(model, tok, prompts, "en", plain, start=2).prefill is None  # turned off
    layers = model.model.layers
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in layers[3].parameters():  # a trained top layer
            p.add_(0.3 * p.std() * torch.randn(p.shape, generator=gen))
    full = quick.answer_after(model, tok, before, plain)
    assert store.served == 0 and full.answers != before.answers  # turned off; the change shows in the answers
    with caplog.at_level(logging.INFO, logger="lensml.evaluation.quick"):
        after = quick.answer_after(model, tok, before, cfg)
    assert "enhanced prefill: layers 2 and up only" in caplog.text
    assert store.served > 0 and after.answers == full.answers and after.central_ids == full.central_ids
    assert after.central_nll == full.central_nll
    before.prefill = cached  # what a later run reads back from the cache serves the same answers
    assert quick.answer_after(model, tok, before, cfg).answers == full.answers and cached.served == store.served
    before.prefill = store
    served = store.served
    with torch.no_grad():
        layers[0].mlp.down_proj.weight.add_(0.05)  # a lower layer changed too: the kept prefill no longer holds
    full = quick.answer_after(model, tok, before, plain)
    after = quick.answer_after(model, tok, before, cfg)
    assert store.served == served and after.answers == full.answers


def test_a_damaged_prefill_cache_entry_is_removed_and_the_answers_stand(tiny_llama, caplog):
    from lensml.evaluation import quick
    from lensml.runtime.models import ModelConfig, cache_dir, load_model

    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    prompts = {"en": ["Why do cats purr?", "What is a prime number?"], "zh": ["什么是质数？"]}
    cfg = quick.QuickEvalConfig(max_new_tokens=4)
    first = quick.answer_before(model, tok, prompts, "en", cfg, start=2)
    [path] = (cache_dir() / "answers").glob("*.L2.prefill.safetensors")
    path.write_bytes(path.read_bytes()[:100])  # cut short
    again = quick.answer_before(model, tok, prompts, "en", cfg, start=2)
    assert again.answers == first.answers and again.central_states is not None and again.prefill is None
    assert not path.exists() and "damaged prefill cache entry" in caplog.text


def test_compare_puts_each_side_in_its_place(monkeypatch):
    """The report's numbers by hand: base answers and NLL on the base side, the enhanced ones on the enhanced side."""
    from lensml.evaluation import quick

    pairs = [("把罗勒插在一杯清水里。", "zh"), ("Put it in water.", "en"), ("Wrap it in a towel.", "en"),
             ("把罗勒包在湿毛巾里，放进冰箱。", "zh")]
    monkeypatch.setattr(quick, "LanguageIdentifier", lambda *a, **k: ScriptedIdentifier(pairs))
    prompts = {"en": ["How do I keep basil fresh?"], "zh": [PROMPT]}
    before = quick.Answers(prompts, "en", {"en": ["Wrap it in a towel."], "zh": ["Put it in water."]}, 2.0, [[1]])
    after = quick.Answers(prompts, "en", {"en": ["Wrap it in a towel."], "zh": ["把罗勒插在一杯清水里。"]}, 2.5, [[1]])
    scores, rows = quick.compare(before, after, quick.QuickEvalConfig(langid="lingua"))
    assert (scores.retention.base_nll, scores.retention.enhanced_nll) == (2.0, 2.5)
    assert scores.retention.relative_change == 0.25 and scores.samples == 1
    assert (scores.base["zh"].fidelity, scores.enhanced["zh"].fidelity) == (0.0, 1.0)
    assert (scores.base["en"].fidelity, scores.enhanced["en"].fidelity) == (1.0, 1.0)
    assert rows[1] == {"lang": "zh", "prompt": PROMPT, "base": "Put it in water.", "enhanced": "把罗勒插在一杯清水里。",
                       "base_check": rows[1]["base_check"], "enhanced_check": rows[1]["enhanced_check"]}
    assert (rows[1]["base_check"]["detected"], rows[1]["enhanced_check"]["detected"]) == ("en", "zh")
