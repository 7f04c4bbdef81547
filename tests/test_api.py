"""The public Python API: what a notebook imports."""

import lensml


def test_public_names_import():
    from lensml import LanguageSubspace, RunConfig, load_model, probe, run, train  # noqa: F401

    for name in lensml.__all__:
        assert getattr(lensml, name) is not None, name
    assert callable(lensml.run) and callable(lensml.train) and lensml.RunConfig().method == "lens"


def test_notebook_example(tiny_llama, parallel_data):
    """The README's five lines, on a tiny model."""
    from lensml import LanguageSubspace, ModelConfig, ProbeConfig, TrainConfig, load_model, load_rows, load_texts, probe, train

    model, tok, name = load_model(ModelConfig(model=str(tiny_llama)))
    sub = probe(model, tok, load_texts(str(parallel_data), ["en", "zh"]), "en", ProbeConfig())
    result = train(model, tok, sub, load_rows(str(parallel_data), ["en", "zh"]), ["zh"], "en", TrainConfig(lr=1e-3))
    assert isinstance(sub, LanguageSubspace) and result.steps == 3 and result.method == "lens"
