"""The one home of language codes: names, ISO 639-1 <-> ISO 639-3, validation of --langs.

lensml names languages by ISO 639-1 codes ("zh"). The table is lingua's (the default
language identifier), so every language lingua can identify is a language lensml can
target, and fidelity can be measured for it. Three codes lingua does not know are
added because lensml's evaluation tasks (XCOPA) cover them; lingua never returns
them, so their fidelity needs another identifier (--langid glotlid).

ISO 639-3: data sets and GlotLID label some languages with an individual-language
code where lingua gives the macrolanguage. `iso639_3` returns the code the Aya
dataset uses (Aya: "arb" Standard Arabic, "swh" Swahili, but "zho" Chinese, the
same as lingua); `iso639_1` maps both kinds back, so a GlotLID "cmn" or "arb" label
counts as "zh" or "ar".

The table ships as JSON (lensml/data/lingua_languages.json, lingua 2.1's languages; a test keeps it
equal to the installed lingua's), so naming and checking languages works where lingua cannot be
installed: the lent GPU machine takes at most 64 MiB of files, and lingua's wheel is 96 MB. Where lingua
is installed, a language a newer lingua adds joins the table.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from lensml.errors import LensError

TABLE = Path(__file__).resolve().parent / "data" / "lingua_languages.json"

# Codes lingua does not know, covered by lensml's evaluation tasks: code -> (name, ISO 639-3).
_EXTRA: dict[str, tuple[str, str]] = {"ht": ("Haitian Creole", "hat"), "qu": ("Quechua", "que"),
                                      "my": ("Burmese", "mya")}
# Names lingua spells without their language ("BOKMAL").
_NAME_OVERRIDE: dict[str, str] = {"nb": "Norwegian Bokmål", "nn": "Norwegian Nynorsk"}
# Where Aya (and GlotLID) use an individual-language code instead of lingua's macrolanguage code.
_ISO3_OVERRIDE: dict[str, str] = {"ar": "arb", "sw": "swh"}
# Individual-language ISO 639-3 codes (GlotLID labels, Aya codes) -> the two-letter code of their macrolanguage.
_INDIVIDUAL: dict[str, str] = {
    "cmn": "zh", "yue": "zh", "wuu": "zh", "arb": "ar", "swh": "sw", "pes": "fa", "zsm": "ms", "ekk": "et",
    "lvs": "lv", "khk": "mn", "azj": "az", "als": "sq", "quy": "qu", "quz": "qu",
}


@lru_cache(maxsize=1)
def _table() -> dict[str, tuple[str, str]]:
    """Two-letter code -> (English name, lingua's ISO 639-3 code), for lingua's languages and the extras."""
    table = {code: tuple(entry) for code, entry in json.loads(TABLE.read_text(encoding="utf-8")).items()}
    table.update({code: entry for code, entry in lingua_table().items() if code not in table})
    table.update({code: (name, table[code][1]) for code, name in _NAME_OVERRIDE.items()})
    table.update(_EXTRA)
    return table


def lingua_table() -> dict[str, tuple[str, str]]:
    """The installed lingua's languages as the table holds them; empty without lingua."""
    try:
        from lingua import Language  # optional here: see the module docstring
    except ImportError:
        return {}
    return {lang.iso_code_639_1.name.lower(): (lang.name.capitalize(), lang.iso_code_639_3.name.lower())
            for lang in Language.all()}


@lru_cache(maxsize=1)
def _reverse() -> dict[str, str]:
    rev = {code3: code for code, (_, code3) in _table().items()}
    rev.update({code3: code for code, code3 in _ISO3_OVERRIDE.items()})
    rev.update(_INDIVIDUAL)
    return rev


def is_known(code: str) -> bool:
    """A lower-case two-letter code lensml can name (and lingua identify, but for ht, qu, my)."""
    return code in _table()


def known_codes() -> list[str]:
    """All known two-letter codes, sorted."""
    return sorted(_table())


def _entry(code: str) -> tuple[str, str]:
    try:
        return _table()[code]
    except KeyError:
        raise LensError(f"unknown language code '{code}': use a two-letter ISO 639-1 code, "
                        f"one of {','.join(known_codes())}") from None


def language_name(code: str) -> str:
    """English name of a two-letter code: "zh" -> "Chinese"; unknown codes are an error."""
    return _entry(code)[0]


def iso639_3(code: str) -> str:
    """ISO 639-3 code as the Aya dataset labels it: "zh" -> "zho", "ar" -> "arb", "sw" -> "swh"."""
    return _ISO3_OVERRIDE.get(code) or _entry(code)[1]


def iso639_1(code3: str) -> str | None:
    """Two-letter code of an ISO 639-3 code, macro or individual ("zho", "cmn", "yue" -> "zh"); None if unknown."""
    return _reverse().get(code3.lower())


def check_languages(codes: list[str], central: str) -> None:
    """Reject unknown codes, a language list without a target language, and a repeated code."""
    for code in [central, *codes]:
        if not is_known(code):
            hint = f" (did you mean '{iso639_1(code)}'?)" if iso639_1(code) else ""
            raise LensError(f"unknown language code '{code}'{hint}: use a two-letter ISO 639-1 code, "
                            f"one of {','.join(known_codes())}")
    if not [c for c in codes if c != central]:
        raise LensError(f"no target language besides the central language '{central}': pass e.g. --langs zh")
    if len(set(codes)) != len(codes):
        raise LensError(f"language list {','.join(codes)} repeats a code: list each language once")
