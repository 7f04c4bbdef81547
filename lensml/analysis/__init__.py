"""Analyses of finished runs: pictures and numbers read back from a run folder.

`plot_subspace(RUN)` (CLI: `lens plot subspace RUN`) draws the LENS paper's Fig. 6 for any run;
the pure functions behind it (`separation`, `pca_2d`) take arrays and need no model. Imports are
lazy so that `lens --help` does not load torch or matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "plot_subspace": "lensml.analysis.subspace_plot", "separation": "lensml.analysis.separation",
    "pca_2d": "lensml.analysis.separation", "chance_share": "lensml.analysis.separation",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lensml.analysis' has no attribute '{name}'")
