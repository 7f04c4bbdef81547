"""Language subspaces: the LSAR decomposition and its artifact.

Per layer, the language means M (d x L) are split as M ~ M_a 1^T + M_s Gamma^T with
M_a orthogonal to span(M_s) (Xie et al. 2022, Algorithm 1 of LENS), in float64
because the second SVD works on small differences of large vectors.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lensml.errors import LensError
from lensml.io import dumps, staged_dir

log = logging.getLogger(__name__)

WEIGHTS = "subspace.safetensors"
CONFIG = "subspace_config.json"


def lsar(means: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decompose d x L language means into (M_a (d,), M_s (d, r), Gamma (L, r)).

    Centre, keep the best rank-r affine fit, take M_a = pinv(fit)^T 1 / |.|^2 (so every
    fitted column has the same component along M_a, exactly M_a), then M_s as the top-r
    left singular vectors of the fit minus M_a: those residuals are orthogonal to M_a.
    """
    M = means.to(torch.float64)
    d, n_lang = M.shape
    if not 1 <= rank <= n_lang - 1:
        raise LensError(f"subspace rank {rank} must be between 1 and {n_lang - 1} for {n_lang} languages")
    mu = M.mean(dim=1, keepdim=True)
    U, S, Vh = torch.linalg.svd(M - mu, full_matrices=False)
    fit = mu + U[:, :rank] @ torch.diag(S[:rank]) @ Vh[:rank]
    ones = torch.ones(n_lang, dtype=torch.float64)
    m_a = torch.linalg.pinv(fit).T @ ones
    m_a = m_a / m_a.dot(m_a)
    U2, S2, Vh2 = torch.linalg.svd(fit - m_a[:, None], full_matrices=False)
    m_s = U2[:, :rank]
    gamma = Vh2[:rank].T * S2[:rank]
    return m_a, m_s, gamma


@dataclass
class LanguageSubspace:
    """Per-layer language means and their agnostic/specific decomposition.

    Layer i holds hidden_states[i + 1] of the model: the outputs of its decoder
    layers, the last one after the final norm (that is the one training reads).
    """

    languages: list[str]
    central: str
    rank: int
    means: torch.Tensor      # (n_layers, L, d) float64
    agnostic: torch.Tensor   # (n_layers, d) float64, M_a unnormalised as LSAR returns it
    specific: torch.Tensor   # (n_layers, d, r) float64, orthonormal columns
    metadata: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, means: torch.Tensor, languages: list[str], central: str, rank: int | None = None,
            metadata: dict | None = None) -> "LanguageSubspace":
        if central not in languages:
            raise LensError(f"central language '{central}' is not among the probed languages {languages}")
        rank = len(languages) - 1 if rank is None else rank
        agn, spec = [], []
        for layer_means in means.to(torch.float64):
            m_a, m_s, _ = lsar(layer_means.T, rank)
            agn.append(m_a)
            spec.append(m_s)
        return cls(list(languages), central, rank, means.to(torch.float64), torch.stack(agn), torch.stack(spec),
                   dict(metadata or {}))

    @property
    def num_layers(self) -> int:
        return self.means.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.means.shape[2]

    def direction(self, lang: str, layer: int = -1) -> torch.Tensor:
        """delta_l = M_s M_s^T (m_l - m_c): where lang sits relative to the central language."""
        diff = self.means[layer, self.languages.index(lang)] - self.means[layer, self.languages.index(self.central)]
        m_s = self.specific[layer]
        return m_s @ (m_s.T @ diff)

    def projectors(self, layer: int = -1, normalize_agnostic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, M_s): P_a x = (x.a) a and P_s x = M_s M_s^T x; a is unit length when normalised."""
        a = self.agnostic[layer]
        if normalize_agnostic:
            a = a / a.norm()
        return a, self.specific[layer]

    def check_compatible(self, hidden_size: int, num_layers: int, languages: list[str], central: str) -> None:
        if hidden_size != self.hidden_size or num_layers != self.num_layers:
            raise LensError(f"subspace was probed on a model with hidden size {self.hidden_size} and {self.num_layers} "
                            f"layers, this model has {hidden_size} and {num_layers}: probe this model again")
        missing = [lang for lang in [central, *languages] if lang not in self.languages]
        if missing or central != self.central:
            raise LensError(f"subspace covers languages {','.join(self.languages)} with central '{self.central}', "
                            f"asked for {','.join(languages)} with central '{central}': probe these languages")

    def check_model(self, model_name: str) -> bool:
        """Warn when the subspace was probed on another model than `model_name`; True if they match.

        A warning, not an error: shapes are checked by check_compatible, and a fine-tune of the
        probed model (another name, same weights underneath) is a legitimate use. Subspaces
        without a recorded model (older artifacts) are not warned about.
        """
        probed_on = self.metadata.get("model")
        if not probed_on or probed_on == model_name:
            return True
        log.warning("the subspace was probed on %s, but the model trained is %s: directions probed on another "
                    "model rarely fit; probe this model (lens probe) unless they share weights", probed_on, model_name)
        return False

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write safetensors + JSON atomically: a temporary folder swapped in only when complete."""
        with staged_dir(directory, overwrite=True) as tmp:
            save_file({"means": self.means.contiguous(), "agnostic": self.agnostic.contiguous(),
                       "specific": self.specific.contiguous()}, str(tmp / WEIGHTS))
            cfg = {"languages": self.languages, "central": self.central, "rank": self.rank,
                   "hidden_size": self.hidden_size, "num_layers": self.num_layers, **self.metadata}
            (tmp / CONFIG).write_text(dumps(cfg), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "LanguageSubspace":
        directory = Path(directory)
        if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
            raise LensError(f"{directory} is not a lensml subspace (no {CONFIG} / {WEIGHTS}): run `lens probe` first")
        redo = "re-run `lens probe` to write it again"
        try:
            cfg = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
            core = {k: cfg.pop(k) for k in ("languages", "central", "rank")}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LensError(f"{directory / CONFIG} is not valid JSON: {redo}") from err
        except (KeyError, TypeError, AttributeError) as err:
            raise LensError(f"{directory / CONFIG} lacks languages, central or rank: {redo}") from err
        try:
            tensors = load_file(str(directory / WEIGHTS))
            means, agnostic, specific = tensors["means"], tensors["agnostic"], tensors["specific"]
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise LensError(f"{directory / WEIGHTS} is truncated or not a subspace file: {redo}") from err
        languages = core["languages"]
        n_layers = means.shape[0] if means.dim() == 3 else -1
        ok = (isinstance(languages, list) and core["central"] in languages and means.dim() == 3
              and means.shape[1] == len(languages) and agnostic.shape == (n_layers, means.shape[2])
              and specific.dim() == 3 and specific.shape[:2] == (n_layers, means.shape[2])
              and specific.shape[2] == core["rank"])
        if not ok:
            raise LensError(f"{directory} holds tensors whose shapes do not match its {CONFIG}: {redo}")
        for k in ("hidden_size", "num_layers"):
            cfg.pop(k, None)
        return cls(languages, core["central"], core["rank"], means, agnostic, specific, cfg)
