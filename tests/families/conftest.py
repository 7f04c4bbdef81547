"""The family matrix: one tiny random model per family, built once per session and loaded fresh where a test
changes it.

Every family listed here goes through the same checks (probing, the reference cache, training on the cached
top block, saving and applying, steering and the evaluation decoder); the GGUF checks take the families that
both gguf-py and transformers' GGUF loader know (tests/families/test_gguf.py).
"""

from __future__ import annotations

import pytest

from lensml.runtime.models import ModelConfig, load_model
from tests.evaluation.conftest import _one_thread  # noqa: F401  (autouse fixture: one torch thread)
from tests.helpers import build_tiny_model

#: llama and gemma3 are the suite's own tiny models (ChatML template); the others carry their family's template.
FAMILIES = ["llama", "llama3.1", "phi3", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "olmo2", "granite",
            "qwen3_moe"]

_BUILT: dict[str, object] = {}


@pytest.fixture(scope="session")
def family_models(tmp_path_factory):
    """family -> its saved tiny model folder, built on first use."""
    def get(family: str):
        if family not in _BUILT:
            _BUILT[family] = build_tiny_model(tmp_path_factory.mktemp(f"family-{family}"), family)
        return _BUILT[family]
    return get


@pytest.fixture(params=FAMILIES)
def family(request, family_models):
    """(name, folder) of each family of the matrix."""
    return request.param, family_models(request.param)


def load(path):
    model, tok, _ = load_model(ModelConfig(model=str(path)))
    return model, tok


