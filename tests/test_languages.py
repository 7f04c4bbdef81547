"""The one language-code table: names, ISO 639-3 both ways, validation of --langs."""

import json
import subprocess
import sys

import pytest

from lensml.errors import LensError
from lensml.languages import check_languages, iso639_1, iso639_3, is_known, language_name


def test_names_and_codes():
    assert language_name("zh") == "Chinese" and language_name("en") == "English" and language_name("sw") == "Swahili"
    assert iso639_3("zh") == "zho" and iso639_3("en") == "eng" and iso639_3("ja") == "jpn"
    assert iso639_3("sw") == "swh" and iso639_3("ar") == "arb"  # Aya's individual-language codes
    assert language_name("fi") == "Finnish" and iso639_3("fi") == "fin"  # any lingua language, not a fixed list
    assert language_name("qu") == "Quechua" and iso639_3("ht") == "hat"  # XCOPA languages lingua lacks


def test_iso639_1_maps_macro_and_individual_codes_back():
    for code3, code in {"zho": "zh", "cmn": "zh", "yue": "zh", "ara": "ar", "arb": "ar", "swa": "sw", "swh": "sw",
                        "eng": "en", "ben": "bn", "kor": "ko", "jpn": "ja", "hat": "ht"}.items():
        assert iso639_1(code3) == code, code3
    assert iso639_1("xyz") is None
    for code in ("en", "zh", "ja", "ko", "ar", "bn", "sw", "de", "ht", "qu", "my"):
        assert iso639_1(iso639_3(code)) == code


def test_is_known():
    assert is_known("zh") and is_known("bn") and is_known("my")
    assert not is_known("xx") and not is_known("zho") and not is_known("") and not is_known("ZH")


def test_check_languages_errors():
    check_languages(["en", "zh", "sw"], "en")
    with pytest.raises(LensError, match="unknown language code 'zho'.*did you mean 'zh'"):
        check_languages(["en", "zho"], "en")
    with pytest.raises(LensError, match="unknown language code 'xx'"):
        check_languages(["en", "zh"], "xx")
    with pytest.raises(LensError, match="no target language"):
        check_languages(["en"], "en")
    with pytest.raises(LensError, match="repeats a code"):
        check_languages(["en", "zh", "zh"], "en")
    with pytest.raises(LensError, match="unknown language code"):
        language_name("xx")


def test_shipped_table_is_lingua_s(monkeypatch):
    """The JSON table equals the installed lingua's (so it can stand in where lingua is not installed), and
    a language only lingua knows still joins; without lingua the shipped table alone names every language."""
    from lensml import languages

    shipped = {code: tuple(v) for code, v in json.loads(languages.TABLE.read_text(encoding="utf-8")).items()}
    lingua = languages.lingua_table()
    assert len(shipped) == 75 and {c: lingua[c] for c in shipped} == shipped
    languages._table.cache_clear()
    languages._reverse.cache_clear()
    try:
        monkeypatch.setattr(languages, "lingua_table", lambda: {"xq": ("Newish", "xqq"), "zh": ("Other", "zzz")})
        assert language_name("xq") == "Newish" and language_name("zh") == "Chinese"  # the shipped entry stays
        monkeypatch.setattr(languages, "lingua_table", lambda: {})
        languages._table.cache_clear()
        languages._reverse.cache_clear()
        assert language_name("fi") == "Finnish" and iso639_3("sw") == "swh" and iso639_1("cmn") == "zh"
        assert not is_known("xq")
    finally:
        languages._table.cache_clear()
        languages._reverse.cache_clear()


def test_lensml_runs_its_run_recipe_imports_without_lingua():
    """Where lingua cannot be installed (the lent GPU machine), lensml still imports, names and checks
    languages; only the lingua identifier itself needs it, and says so when asked for."""
    code = ("import sys; sys.modules['lingua'] = None\n"
            "import lensml.cli, lensml.recipes.run, lensml.evaluation.quick\n"
            "from lensml.languages import check_languages, language_name\n"
            "check_languages(['en', 'zh', 'sw'], 'en'); assert language_name('bn') == 'Bengali'\n"
            "from lensml.runtime.langid import LanguageIdentifier\n"
            "try:\n    LanguageIdentifier()('hello there')\nexcept Exception as err:\n    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "LensError lingua is not installed: pip install lingua-language-detector, " \
                                 "or pass --langid cld3 or glotlid"
