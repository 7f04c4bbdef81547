"""LLM-as-judge over any OpenAI-compatible `/chat/completions` endpoint.

FastChat's MT-Bench single-answer grading: `single-v1` for a first turn,
`single-v1-multi-turn` for the second (the `-math-` variants with a reference answer
for math, reasoning and coding, as FastChat does), prompts read from a FastChat
`judge_prompts.jsonl`. The rating is read from `[[n]]` (or `[n]`). Only the standard
library speaks HTTP, so judging needs no extra dependency. The API key comes from an
environment variable whose *name* is configured; its value is never logged or stored.
Every judgment is cached on disk under a hash of (judge model, messages), so a rerun
never pays twice; transient failures (5xx, 429, timeouts) are retried with
exponential backoff and are not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lensml.errors import LensError
from lensml.io import write_json_atomic
from lensml.evaluation.tasks import read_jsonl

log = logging.getLogger(__name__)

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
#: FastChat grades these categories against a reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
REQUIRED_PROMPTS = ("single-v1", "single-v1-multi-turn")


@dataclass
class JudgeConfig:
    """Where the judge runs and how hard to try."""

    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL, e.g. https://api.openai.com/v1"})
    model: str | None = field(default=None, metadata={"help": "judge model name at that endpoint"})
    api_key_env: str | None = field(default=None, metadata={"help": "name of the environment variable holding the API key"})
    prompts: str | None = field(default=None, metadata={"help": "FastChat judge_prompts.jsonl (default: one beside the questions)"})
    concurrency: int = field(default=4, metadata={"help": "judge requests in flight at once"})
    retries: int = field(default=4, metadata={"help": "retries of a request after 5xx, 429 or a timeout"})
    backoff_s: float = field(default=1.0, metadata={"help": "first retry delay in seconds, doubled each retry"})
    timeout_s: float = field(default=120.0, metadata={"help": "seconds to wait for one judge answer"})
    max_tokens: int = field(default=2048, metadata={"help": "judge answer length limit"})
    cache_dir: str | None = field(default=None, metadata={"help": "judgment cache (default: $LENSML_CACHE/judge)"})

    @property
    def enabled(self) -> bool:
        return bool(self.base_url or self.model)


@dataclass
class Judgment:
    rating: float | None
    text: str
    cached: bool = False
    error: str | None = None


def parse_rating(text: str) -> float | None:
    """FastChat's rule: the number in `[[n]]`, else in `[n]`; None when there is none."""
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    return float(match.group(1)) if match else None


def load_judge_prompts(path: str | Path) -> dict[str, dict]:
    """FastChat judge prompts by name; the single-answer ones must be there."""
    path = Path(path)
    if not path.is_file():
        raise LensError(f"judge prompt file {path} does not exist: pass --judge-prompts judge_prompts.jsonl")
    prompts = {}
    for row, where in read_jsonl(path):
        for key in ("name", "system_prompt", "prompt_template"):
            if not isinstance(row.get(key), str):
                raise LensError(f"{where}: judge prompt without '{key}'")
        prompts[row["name"]] = row
    missing = [name for name in REQUIRED_PROMPTS if name not in prompts]
    if missing:
        raise LensError(f"{path} lacks the FastChat judge prompts {', '.join(missing)}")
    return prompts


def find_judge_prompts(near: Path | None) -> Path:
    """judge_prompts.jsonl in the question file's folder or up to two above (FastChat's layout); else fail clearly."""
    if near is not None:
        folder = near if near.is_dir() else near.parent
        for candidate in (folder, folder.parent, folder.parent.parent):
            if (candidate / "judge_prompts.jsonl").is_file():
                return candidate / "judge_prompts.jsonl"
    raise LensError("the judge needs FastChat's judge prompts and none was found beside the questions: "
                    "pass --judge-prompts path/to/judge_prompts.jsonl")


def judge_messages(prompts: dict[str, dict], category: str, turns: list[str], answers: list[str],
                   reference: list[str] | None, turn: int) -> list[dict]:
    """Chat messages grading turn 1 or 2 of one question, FastChat's prompt choice included."""
    base = category.split("_")[-1]
    math = base in REFERENCE_CATEGORIES and bool(reference)
    name = ("single-math-v1" if math else "single-v1") + ("-multi-turn" if turn == 2 else "")
    if name not in prompts:  # a prompt file without the reference prompts: grade without reference
        name, math = ("single-v1" + ("-multi-turn" if turn == 2 else "")), False
    prompt = prompts[name]
    fields: dict[str, str] = {}
    if turn == 1:
        fields.update(question=turns[0], answer=answers[0])
    else:
        fields.update(question_1=turns[0], answer_1=answers[0], question_2=turns[1], answer_2=answers[1])
    if math:
        fields.update(ref_answer_1=reference[0], ref_answer_2=reference[1] if len(reference) > 1 else "")
    try:
        user = prompt["prompt_template"].format(**fields)
    except (KeyError, IndexError) as err:
        raise LensError(f"judge prompt {name} uses an unknown placeholder {err}") from err
    return [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]


class _Retryable(Exception):
    pass


class JudgeClient:
    """Sends judge prompts, with retries, bounded concurrency and an on-disk cache."""

    def __init__(self, cfg: JudgeConfig):
        if not (cfg.base_url and cfg.model):
            raise LensError("the judge needs both --judge-base-url and --judge-model")
        if cfg.concurrency < 1:
            raise LensError(f"--judge-concurrency must be at least 1, got {cfg.concurrency}")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._key = None
        if cfg.api_key_env:
            self._key = os.environ.get(cfg.api_key_env)
            if not self._key:
                raise LensError(f"environment variable {cfg.api_key_env} (--judge-api-key-env) is not set")
        from lensml.models import cache_dir
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir() / "judge"

    def cache_key(self, messages: list[dict]) -> str:
        blob = json.dumps({"model": self.cfg.model, "messages": messages}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cached(self, key: str) -> Judgment | None:
        path = self.cache / f"{key}.json"
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is asked again and rewritten
        return Judgment(doc.get("rating"), doc.get("judgment", ""), cached=True)

    def _store(self, key: str, judgment: Judgment) -> None:
        write_json_atomic(self.cache / f"{key}.json",
                          {"model": self.cfg.model, "judgment": judgment.text, "rating": judgment.rating})

    def _post(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.cfg.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.cfg.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                doc = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            if err.code >= 500 or err.code == 429:
                raise _Retryable(f"HTTP {err.code}") from err
            detail = err.read().decode("utf-8", "replace")[:200]
            raise LensError(f"judge endpoint {self.url} answered HTTP {err.code}: {detail}") from err
        except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError) as err:
            raise _Retryable(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from err
        except json.JSONDecodeError as err:
            raise _Retryable("answer is not JSON") from err
        try:
            return doc["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise LensError(f"judge endpoint {self.url} answered without choices[0].message.content") from err

    def judge(self, messages: list[dict]) -> Judgment:
        """One judgment: from the cache, or asked with retries (failures come back as error, uncached)."""
        key = self.cache_key(messages)
        cached = self._cached(key)
        if cached is not None:
            return cached
        delay = self.cfg.backoff_s
        for attempt in range(self.cfg.retries + 1):
            try:
                text = self._post(messages)
            except _Retryable as err:
                if attempt == self.cfg.retries:
                    log.warning("judge request failed after %d tries: %s", attempt + 1, err)
                    return Judgment(None, "", error=str(err))
                log.info("judge request failed (%s); retry in %.1fs", err, delay)
                time.sleep(delay)
                delay *= 2
                continue
            judgment = Judgment(parse_rating(text), text)
            self._store(key, judgment)
            return judgment
        raise AssertionError("unreachable")

    def judge_many(self, conversations: list[list[dict]]) -> list[Judgment]:
        """Judgments in input order; identical prompts are asked once."""
        unique: dict[str, list[dict]] = {}
        keys = []
        for messages in conversations:
            key = self.cache_key(messages)
            keys.append(key)
            unique.setdefault(key, messages)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            answers = dict(zip(unique, pool.map(self.judge, unique.values())))
        return [answers[k] for k in keys]
