"""Tiny models built from a config, saved and loaded back through from_pretrained."""

from __future__ import annotations

import pytest

from tests.helpers import build_tiny_model, write_parallel_data


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"), "gemma3")


@pytest.fixture(scope="session")
def tiny_gemma3_wide(tmp_path_factory):
    """Gemma-3 with sliding layers whose window holds every test sequence (as 512 holds real prompts)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma3-wide"), "gemma3", sliding_window=200)


@pytest.fixture(params=["tiny_llama", "tiny_gemma3_wide"])
def arch(request):
    """(model, tokenizer) of each architecture family the prefix and decoding code must handle."""
    from lensml.runtime.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(model=str(request.getfixturevalue(request.param))))
    return model, tok


@pytest.fixture(scope="session")
def parallel_data(tmp_path_factory):
    return write_parallel_data(tmp_path_factory.mktemp("data") / "parallel.jsonl")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSML_CACHE", str(tmp_path / "lensml-cache"))
