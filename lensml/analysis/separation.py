"""How separated the languages are in a model's states, and a shared 2-D view of them (pure numpy).

The measure is the share of the states' variance explained by language identity (eta squared,
the multivariate R^2 of a one-way ANOVA on the language labels):

    share = SS_between / SS_total,  SS_between = sum_k n_k |m_k - m|^2,  SS_total = sum_i |x_i - m|^2

with m the mean of all states and m_k the mean of language k. Why this one:

- it is what LENS edits: the language means (the rows of M in lensml.lens.subspace) are exactly the m_k,
  and the agnostic/specific split moves them relative to each other; the share says how much of the
  spread of individual prompts those means account for;
- it is a ratio of traces of scatter matrices, so a rotation, a uniform scale or a shift of all
  states leaves it unchanged: layers whose hidden-state norms differ by orders of magnitude (they
  grow with depth, and the last entry is after the final norm) are comparable, and so are two models;
- it is bounded in [0, 1] and has an exact chance level: under randomly shuffled labels its expected
  value is (L - 1) / (N - 1) for L languages and N states, whatever the data (drawn as a dashed line),
  so "no separation" reads off the plot without a permutation test.

Its companion, the Fisher-style ratio F = (SS_between / (L - 1)) / (SS_within / (N - L)) (the trace
form of the ANOVA F statistic: spread of the language means over the mean within-language spread,
each per degree of freedom, about 1 at chance), is recorded too: the share saturates near 1 when
languages are well apart, where F still tells 20 from 50. Neither is invariant to an anisotropic
rescaling (a few large outlier dimensions weigh more), which is the price of rotation invariance.
"""

from __future__ import annotations

import numpy as np

from lensml.errors import LensError


def as_array(x) -> np.ndarray:
    """float64 numpy array from a numpy array, a list or a torch tensor (on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _codes(labels) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if len(codes) else 0


def sums_of_squares(states, labels) -> tuple[np.ndarray, np.ndarray]:
    """(SS_between, SS_within) per layer for states (n_layers, N, d) or (N, d) and N labels."""
    x = as_array(states)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != len(labels):
        raise ValueError(f"states must be (n_layers, N, d) with N = {len(labels)} labels, got shape {x.shape}")
    codes, k = _codes(labels)
    grand = x.mean(axis=1, keepdims=True)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    means = np.stack([x[:, codes == c].mean(axis=1) for c in range(k)], axis=1)   # (n_layers, k, d)
    between = (counts[None, :] * ((means - grand) ** 2).sum(-1)).sum(-1)
    within = ((x - means[:, codes]) ** 2).sum(-1).sum(-1)
    return between, within


def separation(states, labels) -> dict[str, np.ndarray]:
    """Per layer: {"language_share": SS_B / SS_T, "fisher_ratio": F} (see the module docstring).

    NaN where undefined (all states equal; a single language; one state per language); the JSON
    writer turns NaN and infinity into null.
    """
    between, within = sums_of_squares(states, labels)
    n = len(labels)
    k = _codes(labels)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = between / (between + within)
        fisher = (between / (k - 1)) / (within / (n - k)) if 1 < k < n else np.full_like(between, np.nan)
    return {"language_share": share, "fisher_ratio": fisher}


def chance_share(labels) -> float:
    """Expected language share under randomly permuted labels: (L - 1) / (N - 1)."""
    n, k = len(labels), _codes(labels)[1]
    return (k - 1) / (n - 1) if n > 1 else float("nan")


def pca_2d(sides: dict[str, object]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Project each side's states (N_side, d) onto the top 2 principal axes of all sides together.

    One fit for every side (base and enhanced stacked, centred on their joint mean) so that the
    panels share axes: a point that moves between panels moved in the model, not in the projection.
    Each axis's sign is fixed (its largest loading positive) so reruns give the same picture.
    Returns ({side: (N_side, 2) coordinates}, share of the joint variance on each axis (2,)).
    """
    arrays = {side: as_array(x) for side, x in sides.items()}
    joint = np.concatenate(list(arrays.values()), axis=0)
    mean = joint.mean(axis=0)
    _, s, vt = np.linalg.svd(joint - mean, full_matrices=False)
    k = min(2, vt.shape[0])
    axes = np.zeros((2, joint.shape[1]))
    axes[:k] = vt[:k]
    for i in range(k):
        if axes[i, np.argmax(np.abs(axes[i]))] < 0:
            axes[i] = -axes[i]
    total = float((s ** 2).sum())
    explained = np.zeros(2)
    if total > 0:
        explained[:k] = s[:k] ** 2 / total
    return {side: (x - mean) @ axes.T for side, x in arrays.items()}, explained


def default_layers(num_layers: int) -> list[int]:
    """One low layer, the middle one and the top (e.g. 3, 15, 29 of 30): where the paper's Fig. 6 looks."""
    return sorted({num_layers // 10, num_layers // 2, num_layers - 1})


def resolve_layers(layers: list[int] | None, num_layers: int) -> list[int]:
    """Layer indices checked against the model (negative ones count from the top), sorted, no repeats."""
    if not layers:
        return default_layers(num_layers)
    out = []
    for layer in layers:
        i = layer + num_layers if layer < 0 else layer
        if not 0 <= i < num_layers:
            raise LensError(f"layer {layer} is out of range for a model with {num_layers} layers: "
                            f"pass --layers with indices in 0..{num_layers - 1} (or -1 for the top)")
        out.append(i)
    return sorted(set(out))
