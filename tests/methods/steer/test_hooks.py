"""Steering hooks (lensml.methods.steer.hooks): exactly lambda * delta_l where they apply, nothing elsewhere, gone after remove().

The tiny model is random, so only the mechanics are tested here; what steering does to a real model's answers is
measured on SmolLM2-135M (the measurement in choose_strength's docstring).
"""

from __future__ import annotations

import json

import pytest
import torch

from lensml.errors import LensError
from lensml.runtime.generation import answer_nll as plain_answer_nll
from lensml.runtime.models import decoder_of
from lensml.methods.steer.hooks import SteerConfig, Steering, read_off
from lensml.methods.steer.measure import answer_nll, choose_strength, read_off_accuracy
from lensml.lens.subspace import LanguageSubspace
from lensml.runtime.templating import encode_prompts, pad
from tests.helpers import SENTENCES

from tests.steering_fixtures import LANGS, _one_thread, tiny  # noqa: F401  (fixtures)


def _batch(tok, prompts, side="left"):
    return pad(encode_prompts(tok, prompts), tok.pad_token_id, side)


def _capture(module):
    """A forward hook recording the module's output; registered after the steering hooks, it sees their result."""
    seen = []
    def keep(_module, _args, out):
        seen.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    handle = module.register_forward_hook(keep)
    return seen, handle


def _outputs(model, module, batch, steering):
    """module's output without and with the steering hooks, and the languages the hooks used.

    The capturing hook is registered after the steering hooks, so it sees what they return.
    """
    seen, cap = _capture(module)
    _run(model, batch)
    cap.remove()
    with steering.attach(model) as handle:
        seen_steered, cap = _capture(module)
        _run(model, batch)
        cap.remove()
    return seen[0], seen_steered[0], handle.languages


def _run(model, batch):
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, use_cache=False).logits


@pytest.mark.parametrize("start, side", [(-2, "left"), (-1, "left"), (-2, "right")])
def test_the_first_hooked_module_changes_only_at_the_last_real_token_by_lambda_delta(tiny, start, side):
    model, tok, _, sub = tiny
    decoder = decoder_of(model)
    n = len(decoder.layers)
    entry = n + start
    module = decoder.norm if entry == n - 1 else decoder.layers[entry]  # the last entry lives after the final norm
    batch = _batch(tok, [SENTENCES["zh"][0], SENTENCES["sw"][1] + " " + SENTENCES["sw"][2], SENTENCES["en"][3]], side)
    steering = Steering(sub, SteerConfig(strength=2.5, start_layer=start))  # language read off each prompt
    base, steered, langs = _outputs(model, module, batch, steering)
    last = batch.last_index
    assert len(langs) == 3
    for row in range(3):
        expected = 2.5 * sub.direction(langs[row], entry).float()
        torch.testing.assert_close(steered[row, last[row]] - base[row, last[row]], expected, rtol=0, atol=2e-6)
        others = torch.ones(base.shape[1], dtype=torch.bool)
        others[last[row]] = False
        assert torch.equal(steered[row, others], base[row, others])  # every other position, padding included


def test_the_language_read_off_is_the_hooks_nearest_mean(tiny):
    model, tok, _, sub = tiny
    batch = _batch(tok, [SENTENCES[lang][i] for lang in LANGS for i in range(3)])
    read = len(decoder_of(model).layers) - 3  # the default: the entry below start_layer -2
    seen, cap = _capture(decoder_of(model).layers[read])
    with Steering(sub, SteerConfig(strength=1.0)).attach(model) as handle:
        _run(model, batch)
    cap.remove()
    rows = torch.arange(9)
    assert handle.languages == read_off(seen[0][rows, batch.last_index], sub, read)


def test_a_given_language_steers_every_sequence_as_it(tiny):
    model, tok, _, sub = tiny
    batch = _batch(tok, [SENTENCES["en"][0], SENTENCES["sw"][0]])
    with Steering(sub, SteerConfig(strength=1.0, lang="zh")).attach(model) as handle:
        _run(model, batch)
        assert handle.languages == ["zh", "zh"]


def test_generation_steers_the_prompt_end_and_every_new_token(tiny):
    """Logits of a steered generate equal a teacher-forced forward steered from the prompt's last token on."""
    model, tok, _, sub = tiny
    batch = _batch(tok, [SENTENCES["zh"][1], SENTENCES["sw"][4] + " " + SENTENCES["sw"][5]])
    steering = Steering(sub, SteerConfig(strength=3.0, lang="zh"))
    with steering.attach(model) as handle, torch.no_grad():
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=4,
                             min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id, output_logits=True,
                             return_dict_in_generate=True, temperature=None, top_p=None, top_k=None)
        seqs = out.sequences
        mask = torch.cat([batch.attention_mask, torch.ones(2, 4, dtype=torch.long)], dim=1)
        width = batch.input_ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full = dict(input_ids=seqs, attention_mask=mask, position_ids=positions, use_cache=False)
        with handle.from_positions(torch.full((2,), width - 1)):
            forced = model(**full).logits
    generated = torch.stack(out.logits, dim=1)  # (b, 4, V)
    torch.testing.assert_close(forced[:, width - 1:-1], generated, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        base = model(**full).logits
    for k in range(width - 1, width + 3):  # the prompt's last token and each generated one: all steered
        assert not torch.allclose(base[:, k], forced[:, k], atol=1e-3)
    assert torch.equal(base[:, :width - 1], forced[:, :width - 1])


def test_remove_restores_the_model_bit_for_bit(tiny):
    model, tok, _, sub = tiny
    batch = _batch(tok, [SENTENCES["zh"][2], SENTENCES["en"][2]])
    base = _run(model, batch)
    handle = Steering(sub, SteerConfig(strength=4.0, lang="zh", pull=0.5)).attach(model)
    assert handle.attached and not torch.equal(_run(model, batch), base)
    handle.remove()
    assert not handle.attached and torch.equal(_run(model, batch), base)
    with Steering(sub, SteerConfig(strength=4.0, start_layer=0)).attach(model):
        assert not torch.equal(_run(model, batch), base)
    assert torch.equal(_run(model, batch), base)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_pull_removes_that_share_of_the_agnostic_distance_for_targets_only(tiny):
    model, tok, _, sub = tiny
    decoder = decoder_of(model)
    batch = _batch(tok, [SENTENCES["zh"][3]])
    def pulled(lang):
        return Steering(sub, SteerConfig(strength=0.0, pull=0.5, start_layer=-1, lang=lang))

    base, zh, _ = _outputs(model, decoder.norm, batch, pulled("zh"))
    _, en, _ = _outputs(model, decoder.norm, batch, pulled("en"))
    base, zh, en = (s[0, -1].double() for s in (base, zh, en))
    a, _ = sub.projectors(-1)
    central = sub.means[-1, sub.languages.index("en")]
    torch.testing.assert_close(zh, base - 0.5 * ((base - central) @ a) * a, rtol=0, atol=2e-6)
    assert torch.equal(en, base)  # the central language is never pulled


def test_read_off_names_the_nearest_mean_on_well_separated_languages():
    torch.manual_seed(0)
    d, langs = 16, ["en", "zh", "sw", "ja"]
    means = torch.randn(3, len(langs), d, dtype=torch.float64) * 10
    sub = LanguageSubspace.fit(means, langs, "en")
    for layer in range(3):
        states = means[layer].repeat(5, 1) + 0.05 * torch.randn(20, d, dtype=torch.float64)
        assert read_off(states.float(), sub, layer) == langs * 5


def test_a_subspace_of_another_model_is_refused(tiny, tmp_path, capsys):
    from lensml.cli import main

    model, _, name, sub = tiny
    means = torch.randn(6, 3, 48, dtype=torch.float64)  # another model: hidden size 48, 6 layers
    other = LanguageSubspace.fit(means, LANGS, "en", metadata={"model": "other/llm"})
    with pytest.raises(LensError, match="probed on other/llm .*hidden size 48, 6 layers.*this model has 32 and 4"):
        Steering(other, SteerConfig(strength=1.0)).attach(model, name)
    other.save_pretrained(tmp_path / "other")
    assert main(["chat", name, "--steer", str(tmp_path / "other"), "--steer-strength", "1", "--prompt", "hi"]) == 2
    last = capsys.readouterr().err.rstrip("\n").split("\n")[-1]  # loading bars come before it
    assert last.startswith("error: the steering subspace was probed on other/llm") and "probe this model" in last
    assert not any(m._forward_hooks for m in model.modules())


def test_save_and_load_round_trip_and_every_accepted_source(tiny, tmp_path):
    _, _, _, sub = tiny
    steering = Steering(sub, SteerConfig(strength=1.5, pull=0.25, lang="zh", grid=[0.0, 1.5]), [{"strength": 1.5}])
    steering.save_pretrained(tmp_path / "run" / "steering")
    assert sorted(p.name for p in (tmp_path / "run" / "steering").iterdir()) == ["steering.json", "subspace"]
    for source in (tmp_path / "run", tmp_path / "run" / "steering"):
        back = Steering.from_pretrained(source)
        assert back.cfg == steering.cfg and back.measurement == [{"strength": 1.5}]
        assert torch.equal(back.subspace.specific, sub.specific) and back.subspace.languages == LANGS
    assert Steering.from_pretrained(tmp_path / "run", strength=3.0, lang=None).cfg.strength == 3.0
    sub.save_pretrained(tmp_path / "probe" / "subspace")
    for source in (tmp_path / "probe", tmp_path / "probe" / "subspace"):
        with pytest.raises(LensError, match="no steering settings: pass --steer-strength"):
            Steering.from_pretrained(source)
        assert Steering.from_pretrained(source, strength=2.0).cfg == SteerConfig(strength=2.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"strength": -1.0}, "strength must be a finite number >= 0"),
    ({"strength": float("nan")}, "strength must be a finite number >= 0"),
    ({"pull": 1.5}, r"pull must be in \[0, 1\]"),
    ({"grid": []}, "grid must list"),
    ({"grid": [1.0, float("inf")]}, "grid must list"),
    ({"select_prompts": 0}, "select_prompts must be at least 1"),
    ({"english_tolerance": -0.1}, "english_tolerance"),
    ({"lang": " "}, "lang is empty"),
])
def test_bad_settings_are_refused_when_built(kwargs, message):
    with pytest.raises(LensError, match=message):
        SteerConfig(**kwargs)


def test_bad_attachments_are_refused(tiny):
    model, _, _, sub = tiny
    for cfg, message in [(SteerConfig(strength=1.0, start_layer=4), "start_layer 4 is outside the model's 4 layers"),
                         (SteerConfig(strength=1.0, start_layer=-2, read_layer=-1), "at or below the first steered"),
                         (SteerConfig(strength=1.0, lang="ja"), "'ja' is not in the subspace"),
                         (SteerConfig(), "no steering strength")]:
        with pytest.raises(LensError, match=message):
            Steering(sub, cfg).attach(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bad_sources_are_refused_with_the_fix(tmp_path):
    with pytest.raises(LensError, match="does not exist"):
        Steering.from_pretrained(tmp_path / "nope")
    with pytest.raises(LensError, match="is not a steering folder"):
        Steering.from_pretrained(tmp_path)
    (tmp_path / "steering.json").write_text("{not json")
    with pytest.raises(LensError, match="not valid JSON"):
        Steering.from_pretrained(tmp_path)
    (tmp_path / "steering.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(LensError, match="not a lensml steering file"):
        Steering.from_pretrained(tmp_path)
    (tmp_path / "steering.json").write_text(json.dumps({"format": "lensml-steering", "version": 1,
                                                        "settings": {"strength": 1.0, "colour": "red"}}))
    with pytest.raises(LensError, match="unknown steering setting"):
        Steering.from_pretrained(tmp_path)
    (tmp_path / "steering.json").write_text(json.dumps({"format": "lensml-steering", "version": 1,
                                                        "settings": {"strength": 1.0}}))
    with pytest.raises(LensError, match="has no subspace/"):
        Steering.from_pretrained(tmp_path)


def test_steered_answer_nll_matches_the_plain_one_unsteered_and_sees_the_steering(tiny):
    model, tok, _, sub = tiny
    prompts, answers = SENTENCES["zh"][:3], ["abc de", SENTENCES["sw"][0], "x"]
    plain = plain_answer_nll(model, tok, prompts, answers)
    assert answer_nll(model, tok, prompts, answers) == pytest.approx(plain, rel=1e-5)
    with Steering(sub, SteerConfig(strength=0.0)).attach(model) as handle:
        assert answer_nll(model, tok, prompts, answers, handle) == pytest.approx(plain, rel=1e-5)
    with Steering(sub, SteerConfig(strength=3.0, lang="zh")).attach(model) as handle:
        steered = answer_nll(model, tok, prompts, answers, handle)
        assert plain_answer_nll(model, tok, prompts, answers) == pytest.approx(plain, rel=1e-5)  # blind to it
    assert abs(steered - plain) > 1e-3


def test_choose_strength_and_read_off_accuracy_report_what_they_measured(tiny):
    model, tok, _, sub = tiny
    cfg = SteerConfig(grid=[2.0, 0.0], select_prompts=2, select_tokens=4)
    strength, table = choose_strength(model, tok, sub, {lang: SENTENCES[lang] for lang in LANGS}, cfg)
    assert [r["strength"] for r in table] == [0.0, 2.0] and strength in (0.0, 2.0)
    assert sum(r["chosen"] for r in table) == 1 and next(r for r in table if r["chosen"])["strength"] == strength
    assert table[0]["central_nll_change"] == 0.0 and set(table[0]["languages"]) == {"zh", "sw"}
    assert all(0 <= r[k] <= 1 for r in table for k in ("fidelity", "clean", "short"))
    _, table = choose_strength(model, tok, sub, {lang: SENTENCES[lang] for lang in LANGS},
                               SteerConfig(grid=[0.0, 1.0, 2.0, 3.0], select_prompts=2, select_tokens=4))
    assert [r["strength"] for r in table] == [0.0, 1.0, 2.0, 3.0][:len(table)]
    broke = [r["strength"] > 0 and all(v["clean"] == 0 for v in r["languages"].values()) for r in table]
    assert not any(broke[:-1]) and (len(table) == 4 or broke[-1])  # nothing is tried past a lambda with no clean answer
    accuracy = read_off_accuracy(model, tok, Steering(sub, SteerConfig(strength=1.0)),
                                 {lang: SENTENCES[lang] for lang in LANGS})
    assert set(accuracy) == set(LANGS) and all(0 <= v <= 1 for v in accuracy.values())
    with pytest.raises(LensError, match="no mean for ja"):
        read_off_accuracy(model, tok, Steering(sub, SteerConfig(strength=1.0)), {"ja": ["x"]})
    with pytest.raises(LensError, match="at least one target language"):
        choose_strength(model, tok, sub, {"en": SENTENCES["en"]}, cfg)


@pytest.mark.parametrize("lang", [None, "zh"])
def test_the_evaluation_decoder_steers_as_generate_does(tiny, lang):
    """Steering paused during the chunked prefill, read off and added from each prompt's last token on:
    the same tokens and log-probabilities as generate() with the hooks on whole prompts."""
    from lensml.runtime import decoding
    from lensml.methods.steer.hooks import steering_only

    model, tok, _, sub = tiny
    prompts = encode_prompts(tok, [SENTENCES["zh"][1], SENTENCES["sw"][4] + " " + SENTENCES["sw"][5],
                                   SENTENCES["en"][2], SENTENCES["sw"][0]])
    plain = decoding.greedy(model, prompts, 6, [tok.eos_token_id], tok.pad_token_id, 4)
    with Steering(sub, SteerConfig(strength=3.0, lang=lang)).attach(model) as handle:
        assert steering_only(model) == [handle]
        fast = decoding.greedy(model, prompts, 6, [tok.eos_token_id], tok.pad_token_id, 2)
        slow = decoding._with_generate(model, prompts, 6, [tok.eos_token_id], tok.pad_token_id, 3, "generate")
        other = decoder_of(model).layers[0].register_forward_hook(lambda *_: None)
        assert steering_only(model) is None  # a hook of unknown needs: whole prompts, generate()
        other.remove()
    assert steering_only(model) == []
    assert [g.ids for g in fast] == [g.ids for g in slow] != [g.ids for g in plain]
    for f, s in zip(fast, slow):
        assert f.logprobs == pytest.approx(s.logprobs, abs=1e-4)
