"""Translators for SDRRL: the model itself, a sequence-to-sequence checkpoint, or a file of translations.

SDRRL's paper translates with a machine translation system; offline there may be none, so the
translator is pluggable (--sdrrl.translator) and checked before the model loads (check_translator):
a checkpoint must be an encoder-decoder model (AutoModelForSeq2SeqLM), with its weights in
safetensors and no remote code; a file must hold the central language and every target.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

from lensml.data.readers import iter_table
from lensml.errors import LensError
from lensml.languages import language_name
from lensml.methods.sdrrl.config import SDRRLConfig
from lensml.runtime.generation import generate
from lensml.runtime.models import bound_hub_requests, check_hub, input_device

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SELF_PROMPT = "Translate the following {src} text into {tgt}. Reply with the translation only.\n\n{text}"


def kind_of(translator: str) -> str:
    """'self', 'file' (ready translations) or 'seq2seq' (a checkpoint: a folder or a Hub id)."""
    if translator == "self":
        return "self"
    return "file" if Path(translator).suffix.lower() in TABLE_SUFFIXES else "seq2seq"


def check_translator(cfg: SDRRLConfig, central: str, targets: list[str]) -> None:
    """Before any model loads: the translator exists and is what it claims (one line naming the fix if not)."""
    kind = kind_of(cfg.translator)
    if kind == "file":
        _read_file(Path(cfg.translator), central, targets)
    elif kind == "seq2seq":
        config = _config(cfg.translator)
        codes = cfg.codes()
        missing = [lang for lang in [central, *targets] if codes and lang not in codes]
        if missing:
            raise LensError(f"--sdrrl.translator-codes has no code for '{missing[0]}': add {missing[0]}=CODE")
        tok = _tokenizer(cfg.translator)
        if not codes and hasattr(tok, "src_lang"):
            raise LensError(f"translation model {cfg.translator} ({config.model_type}) is multilingual: name its "
                            f"language codes, e.g. --sdrrl.translator-codes {central}=...,{targets[0]}=...")
        unknown = [c for c in codes.values() if _lang_token(tok, c) is None]
        if unknown:
            raise LensError(f"translation model {cfg.translator} has no language token '{unknown[0]}': check "
                            f"--sdrrl.translator-codes")


def _config(path: str):
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise LensError(f"--sdrrl.translator {path} is not a translation model (no config.json): give a "
                            f"sequence-to-sequence checkpoint, 'self', or a file of translations ({', '.join(TABLE_SUFFIXES)})")
    else:
        check_hub(path)
        bound_hub_requests()
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else path, trust_remote_code=False)
    except Exception as err:  # transformers raises several types for a bad or missing checkpoint
        raise LensError(f"--sdrrl.translator {path}: cannot read its config ({type(err).__name__}): give a "
                        f"sequence-to-sequence translation checkpoint") from err
    if not getattr(config, "is_encoder_decoder", False):
        raise LensError(f"--sdrrl.translator {path} is not a translation model (a {config.model_type} that is not "
                        f"encoder-decoder): give a sequence-to-sequence checkpoint (Marian, NLLB, M2M100, T5/MADLAD), "
                        f"'self', or a file of translations")
    return config


def _tokenizer(path: str):
    try:
        return AutoTokenizer.from_pretrained(str(Path(path).expanduser()) if Path(path).expanduser().exists() else path,
                                             trust_remote_code=False)
    except Exception as err:  # a missing sentencepiece (Marian) or a broken tokenizer
        raise LensError(f"--sdrrl.translator {path}: cannot load its tokenizer ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); Marian tokenizers need "
                        f"`pip install sentencepiece`") from err


def _read_file(path: Path, central: str, targets: list[str]) -> dict[str, dict[str, str]]:
    """{central sentence: {lang: translation}} of a translations file (rows {central: ..., lang: ...})."""
    if not path.is_file():
        raise LensError(f"--sdrrl.translator {path}: no such file of translations: check the path")
    table: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for row, where in iter_table(path):
        seen |= set(row)
        src = row.get(central)
        if not isinstance(src, str) or not src.strip():
            continue
        table.setdefault(src.strip(), {}).update({lang: row[lang] for lang in targets if isinstance(row.get(lang), str)
                                                  and row[lang].strip()})
    missing = [lang for lang in [central, *targets] if lang not in seen]
    if missing:
        raise LensError(f"translations file {path} has no '{missing[0]}' column: rows must hold the central sentence "
                        f"and its translations, e.g. {{\"{central}\": ..., \"{targets[0]}\": ...}}")
    return table


def _lang_token(tok, code: str) -> int | None:
    """The id of a language token: M2M100 spells it __xx__ (get_lang_id), NLLB and mBART as the code itself."""
    if hasattr(tok, "get_lang_id"):
        try:
            return tok.get_lang_id(code)
        except KeyError:
            return None
    found = tok.convert_tokens_to_ids(code)
    return None if found == tok.unk_token_id else found


@dataclass
class Translator(ABC):
    """Translates sentences from the central language; describe() is what the manifest records."""

    cfg: SDRRLConfig
    central: str
    targets: list[str]
    calls: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"translator": self.cfg.translator, "kind": kind_of(self.cfg.translator), "sentences": dict(self.calls)}

    def __call__(self, sentences: list[str], lang: str) -> list[str | None]:
        self.calls[lang] = self.calls.get(lang, 0) + len(sentences)
        return self.translate(sentences, lang)

    @abstractmethod
    def translate(self, sentences: list[str], lang: str) -> list[str | None]:
        """Translations of sentences into lang, None where there is none."""

    def close(self) -> None:
        """Free what translating held (a translation model's weights)."""


class FileTranslator(Translator):
    def __init__(self, cfg: SDRRLConfig, central: str, targets: list[str]):
        super().__init__(cfg, central, targets)
        self.table = _read_file(Path(cfg.translator), central, targets)

    def translate(self, sentences: list[str], lang: str) -> list[str | None]:
        return [self.table.get(s.strip(), {}).get(lang) for s in sentences]


class SelfTranslator(Translator):
    """The model being trained, asked to translate (greedy), before any weight changes."""

    def __init__(self, cfg: SDRRLConfig, central: str, targets: list[str], model, tokenizer):
        super().__init__(cfg, central, targets)
        self.model, self.tokenizer = model, tokenizer

    def describe(self) -> dict:
        return {**super().describe(), "prompt": SELF_PROMPT, "decoding": "greedy"}

    def translate(self, sentences: list[str], lang: str) -> list[str | None]:
        """Greedy translations; each sentence may take twice its own length plus 16 tokens, in groups of
        similar budgets (one long sentence does not make every short one's batch decode for long)."""
        src, tgt = language_name(self.central), language_name(lang)
        budgets: dict[int, list[int]] = {}
        for i, s in enumerate(sentences):
            n = len(self.tokenizer(s, add_special_tokens=False)["input_ids"])
            budgets.setdefault(min(256, 32 * -(-(2 * n + 16) // 32)), []).append(i)
        out: list[str | None] = [None] * len(sentences)
        for budget, idx in sorted(budgets.items()):
            prompts = [SELF_PROMPT.format(src=src, tgt=tgt, text=sentences[i]) for i in idx]
            texts, gens = generate(self.model, self.tokenizer, prompts, max_new_tokens=budget,
                                   batch_size=self.cfg.batch_size, desc=f"translating into {lang}")
            for i, t, g in zip(idx, texts, gens):
                out[i] = t if g.stopped else None  # a translation cut off is no translation
        return out


class Seq2SeqTranslator(Translator):
    """A translation checkpoint (AutoModelForSeq2SeqLM, safetensors only), greedy, on the model's device."""

    def __init__(self, cfg: SDRRLConfig, central: str, targets: list[str], device):
        super().__init__(cfg, central, targets)
        self.tokenizer = _tokenizer(cfg.translator)
        path = str(Path(cfg.translator).expanduser()) if Path(cfg.translator).expanduser().exists() else cfg.translator
        try:
            self.model = AutoModelForSeq2SeqLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        except Exception as err:  # no safetensors weights, or not loadable as a translation model
            raise LensError(f"--sdrrl.translator {cfg.translator}: cannot load it as a translation model with "
                            f"safetensors weights ({type(err).__name__})") from err
        self.model.to(device).eval()
        self.device, self.model_type = device, self.model.config.model_type

    def describe(self) -> dict:
        return {**super().describe(), "model_type": self.model_type, "codes": self.cfg.codes(),
                "prefix": self.cfg.translator_prefix, "decoding": "greedy"}

    @torch.no_grad()
    def translate(self, sentences: list[str], lang: str) -> list[str | None]:
        codes = self.cfg.codes()
        extra = {}
        if codes:
            self.tokenizer.src_lang = codes[self.central]
            extra["forced_bos_token_id"] = _lang_token(self.tokenizer, codes[lang])
        prefix = self.cfg.translator_prefix.format(src=language_name(self.central), tgt=language_name(lang))
        out: list[str | None] = []
        for s in range(0, len(sentences), self.cfg.batch_size):
            chunk = [prefix + t for t in sentences[s:s + self.cfg.batch_size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True).to(self.device)
            ids = self.model.generate(**enc, num_beams=1, do_sample=False,
                                      max_new_tokens=min(512, 2 * enc["input_ids"].shape[1] + 16), **extra)
            out += [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def make_translator(cfg: SDRRLConfig, central: str, targets: list[str], model, tokenizer) -> Translator:
    kind = kind_of(cfg.translator)
    if kind == "file":
        return FileTranslator(cfg, central, targets)
    if kind == "self":
        return SelfTranslator(cfg, central, targets, model, tokenizer)
    log.info("sdrrl: translating with %s", cfg.translator)
    return Seq2SeqTranslator(cfg, central, targets, input_device(model))
