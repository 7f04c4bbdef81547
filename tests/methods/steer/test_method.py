"""`--method steer`: the strength is chosen or given, the hooks stay on after train(), settings round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from lensml import methods
from lensml.cli import main
from lensml.errors import LensError
from lensml.runtime.generation import generate_answers
from lensml.methods.base import MethodInputs
from lensml.methods.steer.hooks import SteerConfig, Steering
from lensml.lens.subspace import LanguageSubspace
from lensml.training import TrainConfig
from tests.helpers import SENTENCES

from tests.steering_fixtures import LANGS, _one_thread, tiny  # noqa: F401  (fixtures)
ROWS = [{lang: SENTENCES[lang][i] for lang in LANGS} for i in range(len(SENTENCES["en"]))]


def _inputs(sub):
    return MethodInputs(ROWS, LANGS, "en", sub)


def test_steer_is_registered_as_a_method_that_changes_no_weights():
    method = methods.get("steer")
    assert "steer" in methods.names() and method.needs_subspace and not method.changes_weights
    assert methods.registration("steer").section == "steer" and method.trainable_names(None, TrainConfig()) == []


def test_train_leaves_the_hooks_on_and_the_settings_round_trip(tiny, tmp_path):
    model, tok, _, sub = tiny
    prompts = SENTENCES["zh"][:3] + SENTENCES["en"][:2]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    base = generate_answers(model, tok, prompts, 6)
    method = methods.get("steer")
    result = method.train(model, tok, _inputs(sub), TrainConfig(), options=SteerConfig(strength=4.0))
    try:
        assert method.handle.attached and generate_answers(model, tok, prompts, 6) != base
        assert result.method == "steer" and result.steps == 0 and result.trainable_parameters == 0
        assert result.total_parameters == sum(p.numel() for p in model.parameters())
        assert result.resolved["steer"]["strength"] == 4.0 and result.resolved["measurement"] is None
        assert set(result.resolved["read_off_accuracy_train"]) == set(LANGS) and "read_off" in result.timings_s
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
        method.save_pretrained(tmp_path / "steering")
    finally:
        method.handle.remove()
    assert generate_answers(model, tok, prompts, 6) == base
    back = Steering.from_pretrained(tmp_path / "steering")
    assert back.cfg == method.steering.cfg and torch.equal(back.subspace.means, sub.means)
    with back.attach(model):
        reloaded = generate_answers(model, tok, prompts, 6)
    with method.steering.attach(model):
        assert generate_answers(model, tok, prompts, 6) == reloaded


def test_train_chooses_the_strength_when_unset_and_records_the_measurement(tiny):
    model, tok, _, sub = tiny
    method = methods.get("steer")
    options = SteerConfig(grid=[0.0, 3.0], select_prompts=2, select_tokens=4)
    result = method.train(model, tok, _inputs(sub), TrainConfig(), options=options)
    method.handle.remove()
    table = result.resolved["measurement"]
    chosen = [r["strength"] for r in table if r["chosen"]]
    assert [r["strength"] for r in table] == [0.0, 3.0] and chosen == [result.resolved["steer"]["strength"]]
    assert method.steering.cfg.strength == chosen[0] and "select" in result.timings_s


def test_train_refuses_bad_inputs_before_touching_the_model(tiny):
    model, tok, _, sub = tiny
    method = methods.get("steer")
    with pytest.raises(LensError, match="needs a probed subspace"):
        method.train(model, tok, MethodInputs(ROWS, LANGS, "en", None), TrainConfig())
    with pytest.raises(LensError, match="--steer.lang ja is not among"):
        method.train(model, tok, _inputs(sub), TrainConfig(), options=SteerConfig(strength=1.0, lang="ja"))
    other = LanguageSubspace.fit(torch.randn(4, 3, 48, dtype=torch.float64), LANGS, "en", metadata={"model": "other"})
    with pytest.raises(LensError, match="probed on other .*probe this model"):
        method.train(model, tok, _inputs(other), TrainConfig(), options=SteerConfig(strength=1.0))
    with pytest.raises(LensError, match="must be a SteerConfig"):
        method.train(model, tok, _inputs(sub), TrainConfig(), options={"strength": 1.0})
    with pytest.raises(LensError, match="has not run"):
        method.save_pretrained(None)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _steer_run(folder, base, sub, strength=4.0):
    """The layout `lens run --method steer` writes: a manifest naming the base, and OUT/steering."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"kind": "run", "base_model": base, "method": "steer"}))
    Steering(sub, SteerConfig(strength=strength, lang="zh")).save_pretrained(folder / "steering")
    return folder


def test_chat_steers_with_a_steer_run_and_compares_with_the_unsteered_model(tiny, tiny_llama, tmp_path, capsys):
    model, tok, _, sub = tiny
    run = _steer_run(tmp_path / "steer", str(tiny_llama), sub)
    prompt = SENTENCES["en"][0]
    with Steering.from_pretrained(run).attach(model):
        steered = generate_answers(model, tok, [prompt], 5)[0]
    plain = generate_answers(model, tok, [prompt], 5)[0]
    assert steered != plain
    capsys.readouterr()
    assert main(["chat", str(run), "--compare", "--prompt", prompt, "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == f"### {prompt}\n--- base\n{plain}\n--- steered\n{steered}\n\n"
    assert main(["chat", str(tiny_llama), "--steer", str(run), "--steer-strength", "0", "--prompt", prompt,
                 "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == f"### {prompt}\n{plain}\n\n"
    assert main(["chat", str(tiny_llama), "--steer-lang", "zh", "--prompt", prompt]) == 2
    assert "need --steer" in capsys.readouterr().err
    assert main(["chat", str(tiny_llama), "--steer", str(tmp_path / "nope"), "--prompt", prompt]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_steers_letter_scoring_and_refuses_loglik(tiny, tiny_llama, tmp_path, capsys):
    from tests.evaluation.conftest import FIXTURES

    _, _, _, sub = tiny
    run = _steer_run(tmp_path / "steer", str(tiny_llama), sub)
    task = f"xcopa:zh@{FIXTURES / 'xcopa'}"
    common = ["eval", "--model", str(tiny_llama), "--tasks", task, "--limit", "2", "--steer", str(run)]
    assert main([*common, "--out", str(tmp_path / "loglik.json")]) == 2
    assert "loglik scoring would steer only each continuation's last token" in capsys.readouterr().err
    assert not (tmp_path / "loglik.json").exists()
    out = tmp_path / "letter.json"
    assert main([*common, "--out", str(out), "--scoring.mode", "letter"]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"].endswith(f"+ steer({run}, lambda=4, lang=zh)") and doc["lensml_results"][0]["n"] == 2
