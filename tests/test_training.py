import torch

from lensml.data.loaders import load_rows, load_texts
from lensml.lens.losses import LossConfig
from lensml.runtime.models import ModelConfig, load_model
from lensml.lens.probing import ProbeConfig, probe
from lensml.lens.reference_cache import build_cache
from lensml.methods import lens
from lensml.methods.lens import evaluate_loss, train
from lensml.training import TrainConfig, default_lr, size_defaults


def _setup(model_dir, data):
    model, tok, _ = load_model(ModelConfig(model=str(model_dir)))
    langs = ["en", "zh", "sw"]
    sub = probe(model, tok, load_texts(str(data), langs), "en", ProbeConfig(batch_size=5))
    return model, tok, sub, load_rows(str(data), langs), langs


def test_training_lowers_loss_and_freezes_the_rest(tiny_llama, parallel_data):
    model, tok, sub, rows, langs = _setup(tiny_llama, parallel_data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(lr=3e-3, epochs=4, batch_size=8,
                      loss=LossConfig(lambdas={"zh": 2.0, "sw": 1.0}, retain="mean", lambda3=1.0))
    cache = build_cache(model, tok, rows, langs, "en", cfg)  # reference states of the original model
    loss_before = evaluate_loss(model, sub, cache, "en", cfg.loss)["loss"]
    result = train(model, tok, sub, rows, langs, "en", cfg, cache=cache)
    assert result.steps == 4 * 3
    assert all(set(h) >= {"loss", "agnostic", "specific", "retain", "lr"} for h in result.history)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    loss_after = evaluate_loss(model, sub, cache, "en", cfg.loss)["loss"]
    assert loss_after < 0.5 * loss_before
    n_layers = model.config.num_hidden_layers
    changed = {k for k in before if not torch.equal(before[k], trained[k])}
    assert changed, "nothing trained"
    for k in before:
        in_top = any(k.startswith(f"model.layers.{i}.") for i in range(n_layers - 2, n_layers))
        if not in_top:
            assert torch.equal(before[k], trained[k]), f"frozen parameter {k} changed"
    assert result.trainable_parameters < result.total_parameters


def test_size_defaults():
    """The shared default (lr) is training's; LENS's loss options are LENS's own to resolve."""
    small = lens.size_defaults(TrainConfig(), 135_000_000)
    assert abs(small.lr - 1e-3) < 1e-12 and (small.loss.retain, small.loss.lambda3) == ("both", 10.0)
    large = lens.size_defaults(TrainConfig(), 8_000_000_000)
    assert abs(large.lr - 1e-5) < 1e-15 and (large.loss.retain, large.loss.lambda3) == ("mean", 1.0)
    mine = lens.size_defaults(TrainConfig(lr=2e-4, loss=LossConfig(retain="last", lambda3=3.0)), 135_000_000)
    assert (mine.lr, mine.loss.retain, mine.loss.lambda3) == (2e-4, "last", 3.0)
    shared = size_defaults(TrainConfig(), 135_000_000)
    assert shared.lr == small.lr and (shared.loss.retain, shared.loss.lambda3) == (None, None)


def test_default_lr_by_size():
    assert abs(default_lr(135_000_000) - 1e-3) < 1e-12
    assert abs(default_lr(8_000_000_000) - 1e-5) < 1e-12
    assert 1e-5 < default_lr(1_000_000_000) < 1e-3


def test_non_finite_loss_stops_training(tiny_llama, parallel_data):
    import pytest
    from lensml.errors import LensError

    model, tok, sub, rows, langs = _setup(tiny_llama, parallel_data)
    sub.means[-1, 1, 0] = float("nan")  # a broken subspace: delta_zh is NaN
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LensError, match="non-finite at step 1"):
        train(model, tok, sub, rows, langs, "en", TrainConfig(lr=1e-3))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_every_step_moves_the_weights():
    """The first step used to run at lr 0 (warm-up from 0): a one-step run saved the base weights."""
    from lensml.training import lr_factor

    for total, warmup in [(1, 1), (2, 1), (25, 2), (100, 5), (3, 0)]:
        factors = [lr_factor(k, warmup, total) for k in range(total)]
        assert all(f > 0 for f in factors), (total, warmup, factors)
        assert max(factors) == 1.0 or total <= warmup
    assert [round(lr_factor(k, 2, 25), 4) for k in range(3)] == [0.3333, 0.6667, 1.0]


def test_one_step_run_trains_and_logs_the_rate_it_used(tiny_llama, parallel_data):
    model, tok, sub, rows, langs = _setup(tiny_llama, parallel_data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, tok, sub, rows[:8], langs, "en", TrainConfig(lr=1e-3, batch_size=8))
    assert result.steps == 1
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert abs(result.history[0]["lr"] - 1e-3 / 2) < 1e-12  # warm-up of 1 step: (0+1)/(1+1) of the peak
