"""Shared fixtures of the evaluation tests: the fixture folder and the tiny model, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lensml.runtime.models import ModelConfig, load_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny(tiny_llama):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    return model, tok


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model's matmuls are too small to share: with other jobs on the 2 cores, two torch
    threads spin-wait for each other and a forward takes 50x longer. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
