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
def parallel_data(tmp_path_factory):
    return write_parallel_data(tmp_path_factory.mktemp("data") / "parallel.jsonl")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSML_CACHE", str(tmp_path / "lensml-cache"))
