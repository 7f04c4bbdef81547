"""Language codes lensml knows, and their names (for prompts, tables and langid)."""

LANGUAGES: dict[str, str] = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ar": "Arabic",
    "bn": "Bengali", "sw": "Swahili", "fr": "French", "de": "German", "es": "Spanish",
    "it": "Italian", "pt": "Portuguese", "ru": "Russian", "vi": "Vietnamese", "th": "Thai",
    "id": "Indonesian", "tr": "Turkish", "hi": "Hindi", "et": "Estonian", "ht": "Haitian Creole",
    "qu": "Quechua", "ta": "Tamil", "my": "Burmese", "te": "Telugu", "eu": "Basque",
}

from lensml.errors import LensError  # noqa: E402


def check_languages(codes: list[str], central: str) -> None:
    """Reject unknown codes and a language list without a target language."""
    for code in [central, *codes]:
        if code not in LANGUAGES:
            known = ",".join(sorted(LANGUAGES))
            raise LensError(f"unknown language code '{code}': use one of {known}")
    if not [c for c in codes if c != central]:
        raise LensError(f"no target language besides the central language '{central}': pass e.g. --langs zh")
    if len(set(codes)) != len(codes):
        raise LensError(f"language list {','.join(codes)} repeats a code: list each language once")
