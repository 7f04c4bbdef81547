"""The language identifier on clear sentences, on empty text, and GlotLID labels mapped to two-letter codes."""

import pytest

import lensml.runtime.langid as langid
from lensml.errors import LensError
from lensml.runtime.langid import LanguageIdentifier

# Two clear sentences per language, written for this test.
CLEAR = {
    "en": ["The weather is lovely today, so we are going to walk in the park.",
           "Please remember to water the tomatoes before you leave for work."],
    "zh": ["今天天气很好，我们去公园散步吧。", "出门上班之前请记得给西红柿浇水。"],
    "ja": ["今日はとても良い天気なので、公園に散歩に行きましょう。", "仕事に出かける前に、トマトに水をやるのを忘れないでください。"],
    "ko": ["오늘은 날씨가 아주 좋아서 공원에 산책하러 갑시다.", "출근하기 전에 토마토에 물 주는 것을 잊지 마세요."],
    "ar": ["الطقس جميل جدا اليوم، لنذهب إلى الحديقة.", "من فضلك تذكر أن تسقي الطماطم قبل أن تذهب إلى العمل."],
    "bn": ["আজ আবহাওয়া খুব সুন্দর, চলো পার্কে বেড়াতে যাই।", "কাজে যাওয়ার আগে টমেটো গাছে জল দিতে ভুলো না।"],
    "sw": ["Hali ya hewa ni nzuri sana leo, twende tukatembee kwenye bustani.",
           "Tafadhali kumbuka kumwagilia nyanya kabla ya kwenda kazini."],
}


def test_lingua_identifies_clear_sentences():
    ident = LanguageIdentifier()
    for lang, texts in CLEAR.items():
        assert ident.batch(texts) == [lang, lang], lang


def test_empty_text_is_unknown():
    ident = LanguageIdentifier()
    assert ident("") == "" and ident("  \n\t") == "" and ident.batch(["", "Hello there, how are you today?"]) == ["", "en"]


def test_glotlid_labels_become_two_letter_codes(monkeypatch):
    class FakeFastText:
        def predict(self, text):
            label = {"a": "__label__cmn_Hani", "b": "__label__swh_Latn", "c": "__label__arb_Arab",
                     "d": "__label__xyz_Latn"}[text[0]]
            return [label], [0.9]

    monkeypatch.setattr(langid, "_detector", lambda backend, path: FakeFastText())
    ident = LanguageIdentifier("glotlid", "model.bin")
    assert ident.batch(["a", "b", "c", "d"]) == ["zh", "sw", "ar", "xyz"]


def test_bad_backend():
    with pytest.raises(LensError, match="unknown language identifier"):
        LanguageIdentifier("nope")
    with pytest.raises(LensError, match="fastText model"):
        LanguageIdentifier("glotlid")


def test_models_loaded_on_demand_give_the_preloaded_answers():
    """lingua loads a language's models when a text first needs them (not all 75 up front): every language
    is still a candidate, so the answers are those of the preloaded detector, including on texts in
    languages the run does not train, degenerate loops, mixed scripts and numbers."""
    from lingua import LanguageDetectorBuilder

    texts = [t for ts in CLEAR.values() for t in ts] + [
        "El tiempo es muy agradable hoy, vamos a caminar por el parque.",
        "O tempo está ótimo hoje, vamos caminhar no parque.",
        "Das Wetter ist heute sehr schön.", "Hali hali hali hali hali hali", "水水水水水水水水",
        "The answer is 42 (四十二).", "1234 5678", "ok", "Привет, как дела?", "Merhaba, nasılsın?"]
    preloaded = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
    langid._detector.cache_clear()
    ident = LanguageIdentifier()
    expected = [lang.iso_code_639_1.name.lower() if (lang := preloaded.detect_language_of(t)) else "" for t in texts]
    assert ident.batch(texts) == expected
    assert {"es", "pt", "de", "ru", "tr"} <= set(expected)  # languages no run here trains were candidates


def test_scripts_are_preloaded_once_and_only_those_the_texts_use(monkeypatch):
    """lingua's models for a shared script load in parallel before the first text needs them (preload_scripts):
    only for scripts present, once per process, and the answers are the detector's own."""
    monkeypatch.setattr(langid, "_preloaded", set())
    assert langid.preload_scripts(["今天天气很好。", "오늘은 날씨가 좋다."]) == []  # no shared script: nothing loads
    assert langid.preload_scripts(["今天天气很好。", "The weather is lovely today."]) == ["latin"]
    assert langid.preload_scripts(["Another English sentence, with more words."]) == []  # already loaded
    assert langid.preload_scripts(["Привет, как дела?", "الطقس جميل جدا اليوم"]) == ["cyrillic", "arabic"]
    assert LanguageIdentifier().batch(["The weather is lovely today, so we walk.", "Привет, как дела у тебя?"]) == \
        ["en", "ru"]


def test_batch_preloads_for_lingua_only(monkeypatch):
    calls = []
    monkeypatch.setattr(langid, "preload_scripts", lambda texts: calls.append(list(texts)))
    monkeypatch.setattr(langid, "_detector", lambda backend, path: type("Fake", (), {
        "predict": lambda self, text: (["__label__eng_Latn"], [0.9])})())
    LanguageIdentifier("glotlid", "model.bin").batch(["Hello there"])
    assert calls == []
    monkeypatch.undo()
    monkeypatch.setattr(langid, "preload_scripts", lambda texts: calls.append(list(texts)))
    assert LanguageIdentifier().batch(["The weather is lovely today, so we walk."]) == ["en"]
    assert calls == [["The weather is lovely today, so we walk."]]
