"""The before/after check inside `lens run`: fidelity, degeneration, English retention.

The recipe calls three functions (answer_before, answer_after, compare) and gets back
the report's QuickEval plus one audit row per prompt for answers.jsonl, recording
what was counted (detected language, echo/loop/empty flags) on each side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import __version__ as transformers_version

from lensml.errors import LensError
from lensml.evaluation.degeneration import degeneration
from lensml.evaluation.metrics import share
from lensml.evaluation.scores import LanguageScores, QuickEval, Retention
from lensml.io import save_tensors_atomic, tensors_for_start, write_json_atomic
from lensml.runtime.decoding import Generation
from lensml.runtime.generation import MAX_PROMPT_TOKENS, answer_nll, answer_nll_from_states, generate, own_nll
from lensml.runtime.langid import LanguageIdentifier
from lensml.runtime.models import cache_dir, decoder_of
from lensml.runtime.prefill_store import PrefillStore
from lensml.runtime.templating import encode_prompts

log = logging.getLogger(__name__)


@dataclass
class QuickEvalConfig:
    """Held-out prompts answered greedily by the base and the enhanced model."""

    data: str = field(default="embedded:heldout", metadata={"help": "held-out prompts (same sources as --train-data)"})
    samples: int | None = field(default=None, metadata={"help": "prompts per language (default: all, 40 embedded)"})
    max_new_tokens: int = field(default=64, metadata={"help": "greedy tokens per answer"})
    batch_size: int = field(default=80, metadata={"help": "prompts per generation batch (all languages together, length-sorted)"})
    langid: str = field(default="lingua", metadata={"help": "language identifier: lingua, cld3, glotlid"})
    glotlid_model: str | None = field(default=None, metadata={"help": "GlotLID fastText model file (with --langid glotlid)"})
    enabled: bool = field(default=True, metadata={"help": "run the quick before/after evaluation"})
    reuse_base: bool = field(default=True, metadata={
        "help": "reuse the base model's answers from an earlier run when the weights (by hash), tokenizer template, "
                "prompts and decoding are identical ($LENSML_CACHE/answers); comparing methods then evaluates the base once"})
    reuse_prefill: bool = field(default=True, metadata={
        "help": "keep the base model's prompt prefill (lower layers' keys and values, held on the host) so that a "
                "model trained only from its start layer up prefills the same prompts with its top layers alone "
                "(same answers; lensml.runtime.prefill_store)"})

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise LensError(f"eval.{name} must be at least 1, got {getattr(self, name)}")
        if self.samples is not None and self.samples < 1:
            raise LensError(f"eval.samples must be at least 1, got {self.samples}: leave it unset to use all prompts")
        LanguageIdentifier(self.langid, self.glotlid_model)  # unknown identifiers fail now, not after training


def answer_prompts(model, tokenizer, prompts: dict[str, list[str]], cfg: QuickEvalConfig, tag: str,
                   capture: int | None = None, keep: PrefillStore | None = None,
                   reuse: PrefillStore | None = None) -> tuple[dict[str, list[str]], dict[str, list[Generation]]]:
    """Every language's prompts in one greedy decode (length-sorted batches across languages: a
    decode step's matrix products run faster on more rows); texts and tokens per language.
    keep/reuse: a prompt prefill to record or to serve from (lensml.runtime.decoding.greedy)."""
    flat = [p for ps in prompts.values() for p in ps]
    texts, gens = generate(model, tokenizer, flat, cfg.max_new_tokens, cfg.batch_size, desc=f"{tag} answers",
                           capture=capture, keep=keep, reuse=reuse)
    out_texts, out_gens, at = {}, {}, 0
    for lang, ps in prompts.items():
        out_texts[lang], out_gens[lang] = texts[at:at + len(ps)], gens[at:at + len(ps)]
        at += len(ps)
    return out_texts, out_gens


def score_answers(prompts: dict[str, list[str]], answers: dict[str, list[str]], ident: LanguageIdentifier) -> dict:
    """Per language: fidelity, echo/loop/empty shares, clean fidelity (right language AND not degenerate).

    "answers" holds what was counted for each answer, in order, so that a run's
    answers.jsonl can show why an answer did or did not count as clean.
    """
    out = {}
    for lang, ans in answers.items():
        detected = ident.batch(ans)
        flags = degeneration(prompts[lang], ans)
        right = [d == lang for d in detected]
        clean = [r and not g for r, g in zip(right, flags["degenerate"])]
        per_answer = [{"detected": d, "echo": e, "loop": lp, "empty": em, "degenerate": g, "clean": c,
                       "right_language": r}
                      for d, e, lp, em, g, c, r in zip(detected, flags["echo"], flags["loop"], flags["empty"],
                                                       flags["degenerate"], clean, right)]
        out[lang] = {
            "n": len(ans),
            "fidelity": share(right),
            "echo": share(flags["echo"]),
            "loop": share(flags["loop"]),
            "empty": share(flags["empty"]),
            "degenerate": share(flags["degenerate"]),
            "clean_fidelity": share(clean),
            "detected": detected,
            "answers": per_answer,
        }
    return out


@dataclass
class Answers:
    """One model's answers to the held-out prompts, and the NLL it gives the base model's central answers.

    central_ids are the tokens of this model's central-language answers (what the base model
    wrote is what the enhanced model is scored on). With a start layer, central_states hold that
    layer's inputs along them and lower the digest of the weights below it, so that a model
    trained only from `start` up scores them with its top layers alone."""

    prompts: dict[str, list[str]]
    central: str
    answers: dict[str, list[str]]
    central_nll: float
    central_ids: list[list[int]]
    start: int | None = None
    central_states: list[torch.Tensor] | None = None
    lower: str | None = None
    # the base prompts' kept prefill: saved beside the base answers in $LENSML_CACHE, not in resume checkpoints
    prefill: PrefillStore | None = field(default=None, repr=False, compare=False)


def lower_digest(model, start: int) -> str:
    """sha256 of the embeddings and the decoder layers below `start`: what a layer-start input depends on."""
    decoder = decoder_of(model)
    h = hashlib.sha256()
    for module in [decoder.get_input_embeddings(), *list(decoder.layers)[:start]]:
        _hash_tensors(h, module.state_dict())
    return h.hexdigest()


def _hash_tensors(h, tensors: dict[str, torch.Tensor]) -> None:
    """Feed each tensor's name, dtype, shape and bytes to the hash h."""
    for name, t in tensors.items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())


def _save_states(path: Path, answers: Answers) -> None:
    """Atomic (concurrent runs write the same states; whichever finishes last leaves a complete file)."""
    lengths = torch.tensor([s.shape[0] for s in answers.central_states])
    save_tensors_atomic(path, {"states": torch.cat(answers.central_states).contiguous(), "lengths": lengths},
                        metadata={"lower": answers.lower, "start": str(answers.start)})


def _load_states(path: Path, start: int) -> tuple[list[torch.Tensor], str] | None:
    with tensors_for_start(path, start) as found:
        if found is None:
            return None
        f, meta = found
        states, lengths = f.get_tensor("states"), f.get_tensor("lengths").tolist()
    if not isinstance(meta.get("lower"), str) or sum(lengths) != states.shape[0]:
        raise ValueError("states and lengths disagree")
    return list(torch.split(states, lengths)), meta["lower"]


def _read_prefill(path: Path, start: int) -> PrefillStore | None:
    """The base answers' kept prefill, or None when absent; a file that does not load is logged and removed
    (the answers stand without it: the enhanced model then prefills in full)."""
    try:
        return PrefillStore.load(path, start)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        log.warning("removing the damaged prefill cache entry %s (%s): the enhanced model prefills in full", path, err)
        path.unlink(missing_ok=True)
        return None


def _read_cache(path: Path, states_path: Path | None, start: int | None) -> tuple[dict, tuple | None] | None:
    """The cached base answers (and layer states), or None when absent; an entry that does not load is
    logged and removed (it would fail every later run otherwise), so the caller recomputes and rewrites it."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(doc, dict) and isinstance(doc.get("answers"), dict)
                and isinstance(doc.get("central_ids"), list) and isinstance(doc.get("central_nll"), (int, float))):
            raise TypeError("not a base-answer record")
        kept = _load_states(states_path, start) if states_path is not None else None
    except (OSError, ValueError, TypeError, SafetensorError) as err:  # ValueError: bad JSON, not UTF-8
        log.warning("removing the damaged base-answer cache entry %s (%s): answering again", path, err)
        for damaged in (path, states_path):
            if damaged is not None:
                damaged.unlink(missing_ok=True)
        return None
    return doc, kept


def base_key(model, tokenizer, prompts: dict[str, list[str]], central: str, cfg: QuickEvalConfig) -> str:
    """What the base answers depend on: every weight's bytes, the template, prompts, decoding, device and versions.

    Greedy decoding of the same weights on the same device and software gives the same answers,
    so a hit is the same measurement, not an approximation of it.
    """
    h = hashlib.sha256()
    _hash_tensors(h, model.state_dict())
    meta = {"template": getattr(tokenizer, "chat_template", None), "vocab": len(tokenizer), "prompts": prompts,
            "central": central, "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
            "device": str(next(model.parameters()).device), "torch": torch.__version__,
            "nll": "generated-ids"}
    meta["transformers"] = transformers_version
    h.update(json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()[:32]


def answer_before(model, tokenizer, prompts: dict[str, list[str]], central: str, cfg: QuickEvalConfig,
                  start: int | None = None) -> Answers:
    """The base model's answers; its NLL of its own central-language answers is the retention baseline,
    read off the log-probabilities of the tokens it chose (no second pass).

    start: the first layer training may change; the inputs of that layer along the central answers
    are kept (and cached with the answers) for answer_after.
    """
    path = cache_dir() / "answers" / f"{base_key(model, tokenizer, prompts, central, cfg)}.json" if cfg.reuse_base else None
    states_path = path.with_name(f"{path.stem}.L{start}.safetensors") if path is not None and start is not None else None
    prefill_path = states_path.with_name(f"{path.stem}.L{start}.prefill.safetensors") if states_path else None
    cached = _read_cache(path, states_path, start) if path is not None else None
    if cached is not None:
        doc, kept = cached
        log.info("base answers reused from %s (same weights, template, prompts and decoding)", path)
        store = _read_prefill(prefill_path, start) if kept is not None and cfg.reuse_prefill else None
        return Answers(prompts, central, doc["answers"], doc["central_nll"], doc["central_ids"], start,
                       *(kept or (None, None)), store)
    store = PrefillStore(start) if cfg.reuse_prefill and start is not None and start > 0 else None
    answers, gens = answer_prompts(model, tokenizer, prompts, cfg, "base", capture=start, keep=store)
    states = [g.states for g in gens[central]] if start is not None else None
    if states is not None and any(s is None for s in states):
        states = None  # the generate() path (hooked models) records none
    result = Answers(prompts, central, answers, own_nll(gens[central]), [g.ids for g in gens[central]], start,
                     states, lower_digest(model, start) if states is not None else None,
                     store if store is not None and len(store) and states is not None else None)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"answers": answers, "central_nll": result.central_nll,
                                     "central_ids": result.central_ids})
            if states is not None:
                _save_states(states_path, result)
            if result.prefill is not None:
                result.prefill.save(prefill_path)
        except OSError as err:  # a read-only cache costs time next run, not this run's result
            log.warning("could not cache the base answers at %s: %s", path, err)
    return result


def answer_after(model, tokenizer, before: Answers, cfg: QuickEvalConfig, nll=None) -> Answers:
    """The enhanced model's answers, and its NLL of the *base* model's central answers (same text, new model).

    nll(model, tokenizer, prompts, answer_ids) replaces the plain teacher-forced NLL for a method whose
    effect that forward cannot see (steering: lensml.methods.base.Method.answer_nll); None keeps it.
    """
    same_lower = before.lower is not None and lower_digest(model, before.start) == before.lower
    reuse = before.prefill if same_lower and cfg.reuse_prefill else None
    served = reuse.served if reuse is not None else 0
    answers, gens = answer_prompts(model, tokenizer, before.prompts, cfg, "enhanced", reuse=reuse)
    if reuse is not None and reuse.served > served:
        log.info("enhanced prefill: layers %d and up only, over the base model's kept prefill (%d chunks)",
                 reuse.start, len(reuse))
    c = before.central
    value = nll(model, tokenizer, before.prompts[c], before.central_ids) if nll is not None else None
    if value is None and before.central_states is not None and same_lower:
        prompt_ids = encode_prompts(tokenizer, before.prompts[c], MAX_PROMPT_TOKENS)
        value = answer_nll_from_states(model, before.start, prompt_ids, before.central_ids, before.central_states)
    if value is None:
        value = answer_nll(model, tokenizer, before.prompts[c], answer_ids=before.central_ids)
    return Answers(before.prompts, c, answers, value, [g.ids for g in gens[c]])


def compare(before: Answers, after: Answers, cfg: QuickEvalConfig) -> tuple[QuickEval, list[dict]]:
    """Scores of both sides (the report's QuickEval) and one audit row per prompt."""
    ident = LanguageIdentifier(cfg.langid, cfg.glotlid_model)
    scores = {"base": score_answers(before.prompts, before.answers, ident),
              "enhanced": score_answers(after.prompts, after.answers, ident)}
    n = len(next(iter(before.prompts.values())))
    quick = QuickEval(n, *({lang: LanguageScores.from_scores(s) for lang, s in scores[side].items()}
                           for side in ("base", "enhanced")),
                      Retention(before.central_nll, after.central_nll))
    rows = []
    for lang, prompts in before.prompts.items():
        for i, prompt in enumerate(prompts):
            row = {"lang": lang, "prompt": prompt, "base": before.answers[lang][i], "enhanced": after.answers[lang][i]}
            for side in ("base", "enhanced"):
                row[f"{side}_check"] = scores[side][lang]["answers"][i]
            rows.append(row)
    return quick, rows
