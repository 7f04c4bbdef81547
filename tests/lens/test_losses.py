import torch

from lensml.lens.losses import LossConfig, agnostic_loss, lens_loss, retain_loss, specific_loss

A = torch.tensor([1.0, 0.0])          # unit agnostic direction
MS = torch.tensor([[0.0], [1.0]])     # specific subspace: the second axis


def test_agnostic_term_by_hand():
    x_l, x_c = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 5.0]])
    # P_a (x_l - x_c) = (-2, 0): mean over d -> 4/2, squared norm -> 4.
    assert agnostic_loss(x_l, x_c, A, LossConfig()).item() == 2.0
    assert agnostic_loss(x_l, x_c, A, LossConfig(reduction="sum")).item() == 4.0


def test_specific_term_by_hand():
    x_l, ref, delta = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), torch.tensor([0.0, 1.0])
    # P_s (x_l - ref) - 1 * delta = (0, 2) - (0, 1) = (0, 1); with lambda 3: (0, -1).
    assert specific_loss(x_l, ref, MS, delta, 1.0, LossConfig()).item() == 0.5
    assert specific_loss(x_l, ref, MS, delta, 3.0, LossConfig(reduction="sum")).item() == 1.0


def test_retain_term_variants():
    last, last_ref = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    mean, mean_ref = torch.tensor([[2.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert retain_loss(last, last_ref, mean, mean_ref, LossConfig(retain="mean")).item() == 4.0
    assert retain_loss(last, last_ref, mean, mean_ref, LossConfig(retain="last")).item() == 0.5
    assert retain_loss(last, last_ref, mean, mean_ref, LossConfig(retain="both")).item() == 4.5


def test_total_and_gradient_conventions():
    x_zh = torch.tensor([[1.0, 2.0]], requires_grad=True)
    x_en = torch.tensor([[3.0, 5.0]], requires_grad=True)
    states = {"en": {"last": x_en, "mean": x_en}, "zh": {"last": x_zh, "mean": x_zh}}
    refs = {"en": {"last": torch.tensor([[3.0, 4.0]]), "mean": torch.tensor([[3.0, 5.0]])},
            "zh": {"last": torch.zeros(1, 2), "mean": torch.zeros(1, 2)}}
    deltas = {"en": torch.zeros(2), "zh": torch.tensor([0.0, 1.0])}
    cfg = LossConfig(lambda1=2.0, lambda3=10.0, retain="last", lambdas={"zh": 1.0})
    terms = lens_loss(states, refs, "en", A, MS, deltas, cfg)
    assert terms["agnostic"].item() == 2.0 and terms["specific"].item() == 0.5 and terms["retain"].item() == 0.5
    assert terms["loss"].item() == 2 * 2.0 + 0.5 + 10 * 0.5
    terms["loss"].backward()
    assert x_en.grad[0, 0] != 0  # the central side of L1 is not detached by default
    x_en.grad = None
    detached = lens_loss(states, refs, "en", A, MS, deltas, LossConfig(lambda3=0.0, retain="mean", detach_central=True))
    detached["loss"].backward()
    assert x_en.grad is None or torch.all(x_en.grad == 0)


def test_unresolved_defaults_are_refused():
    """Defaults are resolved in one place (lensml.methods.lens.size_defaults), never by a fallback inside the loss."""
    import pytest

    x = torch.zeros(1, 2)
    states = {"en": {"last": x, "mean": x}, "zh": {"last": x, "mean": x}}
    deltas = {"en": torch.zeros(2), "zh": torch.zeros(2)}
    with pytest.raises(ValueError, match="retain is unresolved"):
        lens_loss(states, states, "en", A, MS, deltas, LossConfig(lambda3=1.0))
    with pytest.raises(ValueError, match="lambda3 is unresolved"):
        lens_loss(states, states, "en", A, MS, deltas, LossConfig(retain="mean"))


def test_bad_weights_are_refused():
    import pytest

    from lensml.errors import LensError
    with pytest.raises(LensError, match="lambda1"):
        LossConfig(lambda1=float("nan"))
    with pytest.raises(LensError, match="zh=-1"):
        LossConfig(lambdas={"zh": -1.0})


def test_each_language_is_pushed_by_its_own_lambda():
    """lambda_l belongs to the target language l: with lambdas={"zh": 2.0} the zh push is 2 delta_zh, the central
    language's (unset, default 1) plays no part."""
    x_zh = torch.tensor([[1.0, 2.0]])
    x_en = torch.tensor([[3.0, 5.0]])
    states = {"en": {"last": x_en, "mean": x_en}, "zh": {"last": x_zh, "mean": x_zh}}
    refs = {"en": {"last": x_en, "mean": x_en}, "zh": {"last": torch.zeros(1, 2), "mean": torch.zeros(1, 2)}}
    deltas = {"en": torch.zeros(2), "zh": torch.tensor([0.0, 1.0])}
    cfg = LossConfig(lambda1=0.0, lambda3=1.0, retain="last", lambdas={"zh": 2.0})
    # P_s (x_zh - ref) - 2 * delta_zh = (0, 2) - (0, 2) = (0, 0); with lambda 1 it would be (0, 1): 0.5.
    assert lens_loss(states, refs, "en", A, MS, deltas, cfg)["specific"].item() == 0.0
    cfg = LossConfig(lambda1=0.0, lambda3=1.0, retain="last", lambdas={"zh": 3.0})
    # (0, 2) - (0, 3) = (0, -1): mean over d 0.5
    assert lens_loss(states, refs, "en", A, MS, deltas, cfg)["specific"].item() == 0.5
