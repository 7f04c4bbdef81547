"""Offline language identification of model answers.

Default backend: lingua (ships its models; chosen by measurement on short texts,
see benchmarks/langid_accuracy.py and README), imported when first used, so that lensml runs
where lingua cannot be installed (the lent GPU machine: lensml.languages). cld3 is an optional
alternative; GlotLID runs from a fastText model file the user gives. py3langid is measured in
the benchmark but not offered here: its model ships as a pickle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lensml.errors import LensError
from lensml.languages import iso639_1

_FASTTEXT_LABEL = re.compile(r"__label__([a-z]{3})_([A-Za-z]{4})")


@dataclass
class LanguageIdentifier:
    """Maps a text to a two-letter language code, or '' when it cannot tell."""

    backend: str = "lingua"
    model_path: str | None = None  # GlotLID fastText model (.bin) for backend "glotlid"

    def __post_init__(self):
        if self.backend not in ("lingua", "cld3", "glotlid"):
            raise LensError(f"unknown language identifier '{self.backend}': use lingua, cld3 or glotlid")
        if self.backend == "glotlid" and not self.model_path:
            raise LensError("the glotlid identifier needs its fastText model file: pass --glotlid-model PATH")

    def __call__(self, text: str) -> str:
        text = text.strip()
        if not text:
            return ""
        return _detect(self.backend, self.model_path, text)

    def batch(self, texts: list[str]) -> list[str]:
        if self.backend == "lingua":
            preload_scripts(texts)
        return [self(t) for t in texts]


#: Scripts shared by many of lingua's languages: a text in one makes lingua read every such language's models
#: (the name of lingua's Language method that lists them).
_SCRIPTS = {
    "latin": (re.compile(r"[A-Za-z\u00C0-\u024F]"), "all_with_latin_script"),
    "cyrillic": (re.compile(r"[\u0400-\u04FF]"), "all_with_cyrillic_script"),
    "arabic": (re.compile(r"[\u0600-\u06FF]"), "all_with_arabic_script"),
    "devanagari": (re.compile(r"[\u0900-\u097F]"), "all_with_devanagari_script"),
}
_preloaded: set[str] = set()


def preload_scripts(texts: list[str]) -> list[str]:
    """Load, in parallel, the models of every language written in a script the texts use; the scripts loaded now.

    The detector loads a language's models the first time a text needs them, one language after the
    other: the first English answer of a run waited 6.3-6.6 s here for the models of all 44 Latin-script
    languages. lingua keeps loaded models in one store per process, shared by its detectors, and a
    detector built with preloaded models reads them on all cores: so a throwaway detector over the
    script's languages fills the store (3.7 s on 2 cores) and the detector lensml asks, over every
    language, finds them there. Its answers cannot change: same detector, same models.
    """
    lingua = _lingua()
    loaded = []
    for script, (pattern, languages) in _SCRIPTS.items():
        if script not in _preloaded and any(pattern.search(t) for t in texts):
            lingua.LanguageDetectorBuilder.from_languages(*getattr(lingua.Language, languages)()) \
                .with_preloaded_language_models().build()
            _preloaded.add(script)
            loaded.append(script)
    return loaded


def _lingua():
    try:
        import lingua  # optional where --langid is not lingua (module docstring)
    except ImportError as err:
        raise LensError("lingua is not installed: pip install lingua-language-detector, "
                        "or pass --langid cld3 or glotlid") from err
    return lingua


@lru_cache(maxsize=4)
def _detector(backend: str, model_path: str | None):
    if backend == "lingua":
        # Every language stays a candidate (the answers are lingua's over all of them), but each language's
        # models load when a text first needs them: lingua's rules narrow a text to the languages of its
        # script, so a run that detects English and Chinese answers never reads Korean, Arabic or Bengali
        # models. Loading all 75 up front took 5.3 s of every run; the same answers (tested).
        return _lingua().LanguageDetectorBuilder.from_all_languages().build()
    if backend == "cld3":
        try:
            import gcld3  # optional dependency: the module of the cld3-py package
        except ImportError as err:
            raise LensError("cld3 is not installed: pip install cld3-py") from err
        return gcld3.NNetLanguageIdentifier(0, 1000)
    try:
        import fasttext  # optional dependency, for GlotLID
    except ImportError as err:
        raise LensError("GlotLID needs the fasttext package: pip install fasttext-wheel") from err
    return fasttext.load_model(model_path)


def _detect(backend: str, model_path: str | None, text: str) -> str:
    det = _detector(backend, model_path)
    if backend == "lingua":
        lang = det.detect_language_of(text)
        return lang.iso_code_639_1.name.lower() if lang is not None else ""
    if backend == "cld3":
        pred = det.FindLanguage(text)
        return pred.language.split("-")[0] if pred.is_reliable or pred.language != "und" else ""
    labels, _ = det.predict(text.replace("\n", " "))
    match = _FASTTEXT_LABEL.match(labels[0]) if labels else None
    if not match:
        return ""
    # GlotLID labels are ISO 639-3, often individual languages ("cmn", "arb"); a code lensml
    # cannot map stays as it is, so it never counts as the right language.
    return iso639_1(match.group(1)) or match.group(1)
