import pytest
import torch

from lensml.errors import LensError
from lensml.lens.subspace import LanguageSubspace, lsar


def random_means(d=16, n_lang=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, n_lang, generator=g, dtype=torch.float64) + 3.0


@pytest.mark.parametrize("n_lang", [2, 3, 7])
def test_lsar_properties(n_lang):
    M = random_means(n_lang=n_lang)
    m_a, m_s, gamma = lsar(M, n_lang - 1)
    assert m_s.shape == (16, n_lang - 1) and gamma.shape == (n_lang, n_lang - 1)
    assert torch.allclose(m_s.T @ m_s, torch.eye(n_lang - 1, dtype=torch.float64), atol=1e-10)
    assert (m_s.T @ m_a).abs().max() < 1e-10
    # r = L-1: the decomposition rebuilds the means exactly.
    assert torch.allclose(m_a[:, None] + m_s @ gamma.T, M, atol=1e-10)


def test_lsar_lower_rank_is_best_fit_and_still_orthogonal():
    M = random_means(n_lang=6)
    m_a, m_s, gamma = lsar(M, 2)
    assert (m_s.T @ m_a).abs().max() < 1e-10
    assert _fit_error(M, 4) < _fit_error(M, 2)


def _fit_error(M, rank):
    m_a, m_s, gamma = lsar(M, rank)
    return (m_a[:, None] + m_s @ gamma.T - M).norm()


def test_two_language_example_by_hand():
    # m_en = (2, 0, 1), m_zh = (0, 2, 1); by hand: pinv(M)^T 1 = (1,1,1)/3, normalised by |.|^2 = 1/3:
    # M_a = (1, 1, 1), residuals (1, -1, 0) and (-1, 1, 0), M_s = +-(1, -1, 0)/sqrt(2),
    # delta_zh = P_s (m_zh - m_en) = (-2, 2, 0).
    means = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]], dtype=torch.float64)
    sub = LanguageSubspace.fit(means, ["en", "zh"], "en")
    assert torch.allclose(sub.agnostic[0], torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(sub.specific[0].abs()[:, 0], torch.tensor([2 ** -0.5, 2 ** -0.5, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(sub.direction("zh"), torch.tensor([-2.0, 2.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(sub.direction("en"), torch.zeros(3, dtype=torch.float64))
    a, _ = sub.projectors()
    assert torch.isclose(a.norm(), torch.tensor(1.0, dtype=torch.float64))


def test_save_and_reload_round_trip(tmp_path):
    means = torch.randn(3, 3, 8, dtype=torch.float64)
    sub = LanguageSubspace.fit(means, ["en", "zh", "sw"], "en", metadata={"model": "tiny", "samples": {"en": 4}})
    sub.save_pretrained(tmp_path / "s")
    back = LanguageSubspace.from_pretrained(tmp_path / "s")
    assert back.languages == ["en", "zh", "sw"] and back.central == "en" and back.rank == 2
    assert back.metadata["model"] == "tiny" and back.metadata["samples"] == {"en": 4}
    for k in ("means", "agnostic", "specific"):
        assert torch.equal(getattr(back, k), getattr(sub, k))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["subspace.safetensors", "subspace_config.json"]


def test_mismatch_is_a_clear_error():
    sub = LanguageSubspace.fit(torch.randn(2, 2, 8, dtype=torch.float64), ["en", "zh"], "en")
    with pytest.raises(LensError, match="hidden size 8 and 2 layers"):
        sub.check_compatible(16, 2, ["zh"], "en")
    with pytest.raises(LensError, match="probe these languages"):
        sub.check_compatible(8, 2, ["ja"], "en")
    with pytest.raises(LensError, match="rank 3"):
        lsar(torch.randn(8, 3, dtype=torch.float64), 3)


def _saved(tmp_path):
    sub = LanguageSubspace.fit(torch.randn(3, 3, 8, dtype=torch.float64), ["en", "zh", "sw"], "en", metadata={"model": "m"})
    sub.save_pretrained(tmp_path / "sub")
    return tmp_path / "sub"


@pytest.mark.parametrize("damage, needle", [
    (lambda d: (d / "subspace.safetensors").write_bytes((d / "subspace.safetensors").read_bytes()[:100]), "truncated"),
    (lambda d: (d / "subspace.safetensors").write_bytes(b""), "truncated"),
    (lambda d: (d / "subspace_config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "subspace_config.json").write_text('{"languages": ["en"]}'), "lacks languages"),
    (lambda d: (d / "subspace_config.json").write_text('{"languages": ["en", "zh"], "central": "en", "rank": 2}'),
     "shapes do not match"),
])
def test_damaged_artifacts_give_one_line_errors(tmp_path, damage, needle):
    directory = _saved(tmp_path)
    damage(directory)
    with pytest.raises(LensError, match=needle) as err:
        LanguageSubspace.from_pretrained(directory)
    assert "lens probe" in str(err.value) and "\n" not in str(err.value)


def test_save_replaces_atomically(tmp_path, monkeypatch):
    """A failing save keeps the previous artifact whole (it used to delete it before the rename)."""
    directory = _saved(tmp_path)
    before = (directory / "subspace.safetensors").read_bytes()
    import lensml.lens.subspace as module

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", boom)
    with pytest.raises(OSError):
        LanguageSubspace.fit(torch.randn(3, 2, 8, dtype=torch.float64), ["en", "zh"], "en").save_pretrained(directory)
    assert (directory / "subspace.safetensors").read_bytes() == before
    assert LanguageSubspace.from_pretrained(directory).languages == ["en", "zh", "sw"]
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]


def test_check_model_warns_on_another_model(caplog):
    sub = LanguageSubspace.fit(torch.randn(2, 2, 8, dtype=torch.float64), ["en", "zh"], "en", metadata={"model": "org/a"})
    with caplog.at_level("WARNING", logger="lensml.lens.subspace"):
        assert sub.check_model("org/a") is True
        assert not caplog.records
        assert sub.check_model("org/b") is False
    assert len(caplog.records) == 1 and "org/a" in caplog.text and "org/b" in caplog.text
    caplog.clear()
    bare = LanguageSubspace.fit(torch.randn(2, 2, 8, dtype=torch.float64), ["en", "zh"], "en")
    assert bare.check_model("org/b") is True and not caplog.records  # no recorded model: nothing to compare
