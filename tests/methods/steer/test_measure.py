"""choose_strength scores each target's answers against that target's language: with a scripted language
identifier every per-language fidelity is known exactly."""

import pytest

from lensml.methods.steer import measure
from lensml.methods.steer.hooks import SteerConfig
from lensml.methods.steer.measure import choose_strength
from tests.helpers import SENTENCES
from tests.steering_fixtures import LANGS, _one_thread, tiny  # noqa: F401  (fixtures)


def scripted(answer_lang: str):
    """A language identifier that calls every answer answer_lang."""

    class Scripted:
        def __init__(self, *_a, **_k):
            pass

        def batch(self, texts):
            return [answer_lang] * len(texts)

    return Scripted


@pytest.mark.parametrize("said, expected", [("zh", {"zh": 1.0, "sw": 0.0}), ("sw", {"zh": 0.0, "sw": 1.0}),
                                            ("en", {"zh": 0.0, "sw": 0.0})])
def test_each_targets_fidelity_is_against_its_own_language(said, expected, tiny, monkeypatch):
    model, tok, _, sub = tiny
    monkeypatch.setattr(measure, "LanguageIdentifier", scripted(said))
    cfg = SteerConfig(grid=[0.0, 1.0], select_prompts=2, select_tokens=3)
    _, table = choose_strength(model, tok, sub, {lang: SENTENCES[lang] for lang in LANGS}, cfg)
    assert [r["strength"] for r in table] == [0.0, 1.0]
    for row in table:
        assert {lang: v["fidelity"] for lang, v in row["languages"].items()} == expected
        assert row["fidelity"] == sum(expected.values()) / 2
        assert all(v["clean"] <= v["fidelity"] for v in row["languages"].values())  # clean needs the right language
