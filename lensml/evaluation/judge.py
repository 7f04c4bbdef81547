"""LLM-as-judge over any OpenAI-compatible `/chat/completions` endpoint.

FastChat's MT-Bench single-answer grading: `single-v1` for a first turn,
`single-v1-multi-turn` for the second (the `-math-` variants with a reference answer
for math, reasoning and coding, as FastChat does), prompts read from a FastChat
`judge_prompts.jsonl`. The rating is read from `[[n]]` (or `[n]`). Only the standard
library speaks HTTP, so judging needs no extra dependency. The API key comes from an
environment variable whose *name* is configured; its value is never logged or stored.
Every judgment is cached on disk under a hash of (endpoint, judge model, messages), so
a rerun never pays twice and switching endpoints never reuses another judge's scores;
transient failures (5xx, 429, timeouts) are retried with exponential backoff, or after
the server's Retry-After (capped), and are not cached. Other failures (401, 404, an
HTML page or bytes that are not UTF-8 where JSON belongs, a malformed answer) raise JudgeError
at once. Either way a request that got no rating comes back from judge_many with its reason in
`error` (never as "no parsable rating", which is kept for a judge that answered without one), so
the caller keeps what it has and can say why the rest is missing (MT-Bench keeps its answers).
An error never repeats the server's reply: a server that echoes
the request would show the API key; only the status and the JSON `error.message`
(key redacted, shortened) are reported.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from lensml.data.readers import iter_jsonl as read_jsonl
from lensml.errors import LensError
from lensml.io import write_json_atomic
from lensml.runtime.models import cache_dir

log = logging.getLogger(__name__)

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
#: FastChat grades these categories against a reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
REQUIRED_PROMPTS = ("single-v1", "single-v1-multi-turn")
_DETAIL_CHARS = 120  # longest server message repeated in an error


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
    retry_after_max_s: float = field(default=60.0, metadata={"help": "longest wait a server's Retry-After may ask for"})

    def __post_init__(self):
        if bool(self.base_url) != bool(self.model):
            raise LensError("the judge needs both --judge.base-url and --judge.model (or neither, for no judge)")
        checks = [("concurrency", self.concurrency >= 1, "1 or more"), ("retries", self.retries >= 0, "0 or more"),
                  ("max_tokens", self.max_tokens >= 1, "1 or more"), ("backoff_s", self.backoff_s >= 0, "0 or more"),
                  ("timeout_s", self.timeout_s > 0, "a positive number of seconds"),
                  ("retry_after_max_s", self.retry_after_max_s >= 0, "0 or more")]
        for name, ok, fix in checks:
            if not ok:
                raise LensError(f"judge.{name} is {getattr(self, name)}: pass --judge.{name.replace('_', '-')} {fix}")

    @property
    def enabled(self) -> bool:
        return bool(self.base_url or self.model)


class JudgeError(LensError):
    """The judge endpoint refused or broke in a way retrying cannot fix (401, 404, malformed answer)."""


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
        raise LensError(f"judge prompt file {path} does not exist: pass --judge.prompts judge_prompts.jsonl")
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
                    "pass --judge.prompts path/to/judge_prompts.jsonl")


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
    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _public_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def error_detail(body: bytes, secrets: list[str]) -> str:
    """At most the JSON `error.message` (or a string `error`) of a reply, secrets redacted, one short line.

    Anything else the server sent is dropped: a proxy that echoes the request would repeat the key.
    """
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
    except (json.JSONDecodeError, ValueError):
        return ""
    err = doc.get("error") if isinstance(doc, dict) else None
    message = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
    if not isinstance(message, str):
        return ""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    message = re.sub(r"(?i)bearer\s+\S+", "Bearer [redacted]", " ".join(message.split()))
    return message if len(message) <= _DETAIL_CHARS else message[:_DETAIL_CHARS - 3] + "..."


class JudgeClient:
    """Sends judge prompts, with retries, bounded concurrency and an on-disk cache."""

    def __init__(self, cfg: JudgeConfig):
        if not (cfg.base_url and cfg.model):
            raise LensError("the judge needs both --judge.base-url and --judge.model")
        self.cfg = cfg
        self.endpoint = cfg.base_url.rstrip("/")
        self.url = self.endpoint + "/chat/completions"
        self._key = None
        self._failed: JudgeError | None = None
        if cfg.api_key_env:
            self._key = os.environ.get(cfg.api_key_env)
            if not self._key:
                raise LensError(f"environment variable {cfg.api_key_env} (--judge.api-key-env) is not set")
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir() / "judge"

    def cache_key(self, messages: list[dict]) -> str:
        """Hash of (endpoint, model, messages): another endpoint serving the same model name is another judge."""
        blob = json.dumps({"endpoint": self.endpoint, "model": self.cfg.model, "messages": messages},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cached(self, key: str) -> Judgment | None:
        path = self.cache / f"{key}.json"
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not JSON, or not UTF-8
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("judgment"), str) or \
                not isinstance(doc.get("rating"), (int, float, type(None))):
            log.warning("judge cache entry %s is damaged: asking the judge again", path)
            return None  # asked again and rewritten
        return Judgment(doc["rating"], doc["judgment"], cached=True)

    def _store(self, key: str, judgment: Judgment) -> None:
        write_json_atomic(self.cache / f"{key}.json", {"endpoint": _public_url(self.endpoint), "model": self.cfg.model,
                                                       "judgment": judgment.text, "rating": judgment.rating})

    def _post(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.cfg.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.cfg.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        where = _public_url(self.url)
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                kind = response.headers.get_content_type()
                raw = response.read()
            text = raw.decode("utf-8")
            doc = json.loads(text)
        except urllib.error.HTTPError as err:
            if err.code >= 500 or err.code == 429:
                wait = retry_after_s(err.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {err.code}" + (f" (Retry-After {wait:g} s)" if wait else ""), wait) from None
            try:
                detail = error_detail(err.read(), [self._key or ""])
            except OSError:
                detail = ""
            raise JudgeError(f"judge endpoint {_public_url(self.url)} answered HTTP {err.code}"
                             + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, (TimeoutError, socket.timeout)) or isinstance(err, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no answer from {where} within {self.cfg.timeout_s:g} s (--judge.timeout-s)") from err
            raise _Retryable(f"cannot reach {where} ({type(err).__name__}: {reason})") from err
        except UnicodeDecodeError as err:
            raise JudgeError(f"judge endpoint {where} answered with bytes that are not UTF-8 text, not a JSON "
                             f"reply: check --judge.base-url") from err
        except json.JSONDecodeError as err:
            if kind == "text/html" or text.lstrip().startswith("<"):
                raise JudgeError(f"judge endpoint {where} answered with an HTML page, not a JSON reply: check "
                                 f"--judge.base-url (an OpenAI-compatible API, e.g. https://HOST/v1)") from err
            raise _Retryable(f"the answer of {where} is not JSON") from err
        try:
            content = doc["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise JudgeError(f"judge endpoint {where} answered without choices[0].message.content") from err
        if content is not None and not isinstance(content, str):
            raise JudgeError(f"judge endpoint {where} answered a {type(content).__name__} as message.content, not text")
        return content or ""

    def judge(self, messages: list[dict]) -> Judgment:
        """One judgment: from the cache, or asked with retries (transient failures come back as error, uncached;
        others raise JudgeError, and every later request of this client fails at once with the same error)."""
        key = self.cache_key(messages)
        cached = self._cached(key)
        if cached is not None:
            return cached
        delay = self.cfg.backoff_s
        for attempt in range(self.cfg.retries + 1):
            if self._failed is not None:
                raise self._failed
            try:
                text = self._post(messages)
            except _Retryable as err:
                if attempt == self.cfg.retries:
                    tries = f"{attempt + 1} tries" if attempt else "1 try"
                    log.warning("judge request failed after %s: %s", tries, err)
                    return Judgment(None, "", error=f"{err} (after {tries})")
                wait = delay if err.wait_s is None else min(err.wait_s, self.cfg.retry_after_max_s)
                log.info("judge request failed (%s); retry in %.1fs", err, wait)
                time.sleep(wait)
                delay *= 2
                continue
            except JudgeError as err:
                self._failed = err
                raise
            judgment = Judgment(parse_rating(text), text)
            self._store(key, judgment)
            return judgment
        raise AssertionError("unreachable")

    def _judge_or_error(self, messages: list[dict]) -> Judgment:
        try:
            return self.judge(messages)
        except JudgeError as err:  # the reason travels with the judgment: the others keep their ratings
            return Judgment(None, "", error=str(err))

    def judge_many(self, conversations: list[list[dict]]) -> list[Judgment]:
        """Judgments in input order; identical prompts are asked once. None raises: a judgment the judge
        did not give carries the reason in `error` (JudgeError or transient failures after every retry)."""
        unique: dict[str, list[dict]] = {}
        keys = []
        for messages in conversations:
            key = self.cache_key(messages)
            keys.append(key)
            unique.setdefault(key, messages)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            answers = dict(zip(unique, pool.map(self._judge_or_error, unique.values())))
        return [answers[k] for k in keys]
