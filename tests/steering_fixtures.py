"""Fixtures shared by the steering tests (tests/test_steering.py, tests/methods/test_steer.py)."""

import pytest
import torch

from lensml.runtime.models import ModelConfig, load_model
from lensml.lens.probing import ProbeConfig, probe
from tests.helpers import SENTENCES

LANGS = ["en", "zh", "sw"]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """The tiny model, its tokenizer and name, and the subspace probed from the helper sentences."""
    model, tok, name = load_model(ModelConfig(model=str(tiny_llama)))
    sub = probe(model, tok, {lang: SENTENCES[lang] for lang in LANGS}, "en", ProbeConfig(), name)
    return model, tok, name, sub
