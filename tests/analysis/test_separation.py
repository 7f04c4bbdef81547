"""The separation measure and the shared PCA on synthetic states with known language clusters."""

import math

import numpy as np
import pytest
import torch

from lensml.analysis.separation import (chance_share, default_layers, pca_2d, resolve_layers, separation,
                                        sums_of_squares)
from lensml.errors import LensError

LANGS = ["en", "zh", "sw"]


def clustered(offsets=(0.0, 1.0, 8.0), n=40, d=16, seed=0):
    """(3 layers, 3n, d): language centres at distance `offset` apart, unit isotropic noise around them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LANGS), d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = [lang for lang in LANGS for _ in range(n)]
    layers = []
    for offset in offsets:
        x = rng.normal(size=(len(labels), d))
        x += offset * np.repeat(centres, n, axis=0)
        layers.append(x)
    return np.stack(layers), labels


def random_rotation(d, seed=1):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_separation_ranks_layers_none_weak_strong():
    states, labels = clustered()
    m = separation(states, labels)
    share, fisher = m["language_share"], m["fisher_ratio"]
    assert share[0] < share[1] < share[2] and fisher[0] < fisher[1] < fisher[2]
    # No separation sits at the chance level; strong separation explains most of the variance.
    assert abs(share[0] - chance_share(labels)) < 0.03 and 0.5 < fisher[0] < 2.0
    assert share[2] > 0.6 and fisher[2] > 50


def test_separation_is_invariant_to_rotation_scale_and_shift():
    states, labels = clustered()
    q = random_rotation(states.shape[-1])
    moved = 7.5 * states @ q + 3.0
    a, b = separation(states, labels), separation(torch.tensor(moved, dtype=torch.float64), labels)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-9)


def test_sums_of_squares_add_up_and_chance_level():
    states, labels = clustered(n=5)
    between, within = sums_of_squares(states, labels)
    total = ((states - states.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(between + within, total, rtol=1e-10)
    assert chance_share(labels) == pytest.approx(2 / 14)
    # Shuffled labels give the chance level on average.
    rng = np.random.default_rng(3)
    shuffled = [separation(states[0], list(rng.permutation(labels)))["language_share"][0] for _ in range(400)]
    assert np.mean(shuffled) == pytest.approx(chance_share(labels), abs=0.02)


def test_undefined_separation_is_nan_not_an_error():
    same = np.ones((2, 6, 4))
    m = separation(same, ["en"] * 3 + ["zh"] * 3)
    assert all(math.isnan(v) for v in m["language_share"])
    assert math.isnan(separation(np.random.default_rng(0).normal(size=(6, 4)), ["en"] * 6)["fisher_ratio"][0])
    with pytest.raises(ValueError):
        separation(np.zeros((2, 5, 4)), ["en"] * 6)


def test_pca_separates_two_clusters_along_the_first_axis():
    rng = np.random.default_rng(0)
    d, n = 24, 30
    direction = random_rotation(d)[0]
    base = rng.normal(scale=0.1, size=(2 * n, d)) + np.repeat([[-1.0], [1.0]], n, axis=0) * direction
    enhanced = base + rng.normal(scale=0.05, size=base.shape)
    coords, explained = pca_2d({"base": base, "enhanced": torch.tensor(enhanced)})
    assert coords["base"].shape == (2 * n, 2) and coords["enhanced"].shape == (2 * n, 2)
    assert explained[0] > 0.7 and explained[0] >= explained[1] >= 0
    for side in coords:
        first, second = coords[side][:n, 0], coords[side][n:, 0]
        assert first.max() < second.min() or second.max() < first.min()
        # The split is along PC1, not PC2: the gap dwarfs the spread on the second axis.
        assert abs(first.mean() - second.mean()) > 10 * coords[side][:, 1].std()
    # Shared axes: both sides are projected with one fit (one joint centre).
    joint = np.concatenate([coords["base"], coords["enhanced"]])
    np.testing.assert_allclose(joint.mean(axis=0), 0.0, atol=1e-9)
    # Deterministic signs: refitting a sign-flipped copy gives the same picture.
    again, _ = pca_2d({"base": -base, "enhanced": -enhanced})
    np.testing.assert_allclose(np.abs(again["base"]), np.abs(coords["base"]), atol=1e-9)


def test_pca_of_one_dimensional_states_pads_the_second_axis():
    coords, explained = pca_2d({"base": np.arange(4.0)[:, None], "enhanced": np.arange(4.0)[:, None] + 1})
    assert coords["base"].shape == (4, 2) and np.all(coords["base"][:, 1] == 0) and explained[1] == 0


def test_layers_default_and_checked():
    assert default_layers(30) == [3, 15, 29] and default_layers(4) == [0, 2, 3] and default_layers(1) == [0]
    assert resolve_layers([29, -1, 3], 30) == [3, 29]
    assert resolve_layers(None, 4) == [0, 2, 3]
    with pytest.raises(LensError, match="0..3"):
        resolve_layers([4], 4)
