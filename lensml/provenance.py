"""What produced a result: library versions, recorded in every manifest and result file."""

from __future__ import annotations

import platform

import torch
import transformers

from lensml import __version__


def versions() -> dict:
    out = {"lensml": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version()}
    try:
        import datasets  # optional dependency (lensml[hub]): recorded when installed
        out["datasets"] = datasets.__version__
    except ImportError:
        pass
    return out
