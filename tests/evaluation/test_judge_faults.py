"""Judge faults from the robustness review: answers survive a refusing judge, replies are never echoed,
the cache is per endpoint, and Retry-After is honoured."""

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from lensml.cli import main
from lensml.errors import LensError
from lensml.evaluation.benchmarks.base import GenerationConfig
from lensml.evaluation.judge import JudgeClient, JudgeConfig, JudgeError, retry_after_s
from lensml.evaluation.suite import EvalConfig, evaluate
from tests.evaluation.judge_server import FakeJudge

MESSAGES = [{"role": "system", "content": "grade"}, {"role": "user", "content": "Q: 1+1? A: 2"}]
KEY = "sk-secret-0123456789abcdef"


def _config(url: str, tmp_path, **kw) -> JudgeConfig:
    return JudgeConfig(base_url=url, model="judge-1", cache_dir=str(tmp_path / "cache"), backoff_s=0.01, **kw)


def test_unauthorised_judge_keeps_answers_and_fidelity(tiny, fixtures, tmp_path):
    model, tok = tiny
    spec = f"mtbench:zh@{fixtures / 'mt-bench' / 'zh'}"
    with FakeJudge(fail_first=100, status=401, fail_body={"error": {"message": "invalid api key"}}) as server:
        cfg = EvalConfig(tasks=f"xcopa:zh@{fixtures / 'xcopa'},{spec}", limit=3,
                         generation=GenerationConfig(max_new_tokens=4), judge=_config(server.base_url, tmp_path))
        doc = evaluate(model, tok, "tiny", cfg, tmp_path / "out")
        assert len(server.requests) <= cfg.judge.concurrency  # the refusal stops the other requests
    xcopa, mt = doc["lensml_results"]
    assert xcopa["n"] == 3 and mt["judged"] is False and "score" not in mt
    assert "HTTP 401" in mt["judge_error"] and "invalid api key" in mt["judge_error"] and "HTTP 401" in mt["note"]
    assert mt["metric"] == "fidelity" and 0.0 <= mt["fidelity"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "out" / mt["answers_file"]).open()]
    assert len(rows) == 3 and all(len(r["choices"][0]["turns"]) == 2 for r in rows)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["lensml_results"][1]["judge_error"]


def test_cli_exits_2_naming_the_saved_answers(tiny_llama, fixtures, tmp_path, capsys):
    out = tmp_path / "eval" / "r.json"
    with FakeJudge(fail_first=100, status=403) as server:
        code = main(["eval", "--model", str(tiny_llama), "--tasks", f"mtbench:zh@{fixtures / 'mt-bench' / 'zh'}",
                     "--out", str(out), "--generation.max-new-tokens", "2", "--limit", "2",
                     "--judge.base-url", server.base_url, "--judge.model", "j", "--judge.cache-dir", str(tmp_path / "c")])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one line, after any progress output
    assert code == 2 and last.startswith("error: the judge failed on mtbench:zh (") and "HTTP 403" in last
    assert str(out.parent / "r.mtbench_zh.answers.jsonl") in last
    assert (out.parent / "r.mtbench_zh.answers.jsonl").is_file() and json.loads(out.read_text())["lensml_results"][0]["n"] == 2


def test_error_never_echoes_the_reply_or_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_TEST_JUDGE_KEY", KEY)
    body = {"error": {"message": f"Incorrect API key provided: {KEY}. " + "x" * 300}}
    with FakeJudge(fail_first=5, status=401, fail_body=body, echo_headers=True) as server:
        client = JudgeClient(_config(server.base_url, tmp_path, api_key_env="LENS_TEST_JUDGE_KEY"))
        with pytest.raises(JudgeError) as info:
            client.judge(MESSAGES)
    message = str(info.value)
    assert KEY not in message and "Bearer" not in message and "request_headers" not in message
    assert "HTTP 401: Incorrect API key provided: [redacted]." in message
    assert len(message.split(": ", 1)[1]) < 200  # the server's part is at most ~120 characters
    with FakeJudge(fail_first=5, status=400, fail_body={"detail": f"Authorization: Bearer {KEY}"}) as server:
        with pytest.raises(JudgeError) as info:
            JudgeClient(_config(server.base_url, tmp_path, api_key_env="LENS_TEST_JUDGE_KEY")).judge(MESSAGES)
    assert str(info.value).endswith("answered HTTP 400") and KEY not in str(info.value)


def test_cache_is_per_endpoint(tmp_path):
    with FakeJudge(reply="[[3]]") as first, FakeJudge(reply="[[9]]") as second:
        assert JudgeClient(_config(first.base_url, tmp_path)).judge(MESSAGES).rating == 3.0
        other = JudgeClient(_config(second.base_url, tmp_path)).judge(MESSAGES)
        assert (other.rating, other.cached, len(second.requests)) == (9.0, False, 1)
        again = JudgeClient(_config(first.base_url + "/", tmp_path)).judge(MESSAGES)  # same endpoint, trailing slash
        assert (again.rating, again.cached, len(first.requests)) == (3.0, True, 1)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured(tmp_path, status):
    with FakeJudge(fail_first=1, status=status, fail_headers={"Retry-After": "1"}) as server:
        judgment = JudgeClient(_config(server.base_url, tmp_path)).judge(MESSAGES)
        assert judgment.rating == 7.0 and len(server.requests) == 2
        assert server.times[1] - server.times[0] >= 0.9  # not the 0.01 s backoff


def test_retry_after_is_capped(tmp_path):
    with FakeJudge(fail_first=1, status=429, fail_headers={"Retry-After": "3600"}) as server:
        judgment = JudgeClient(_config(server.base_url, tmp_path, retry_after_max_s=0.2)).judge(MESSAGES)
        assert judgment.rating == 7.0 and 0.15 <= server.times[1] - server.times[0] < 5


def test_retry_after_forms():
    assert retry_after_s("7") == 7.0 and retry_after_s(" 0 ") == 0.0 and retry_after_s("-3") == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_s(later) <= 31
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("kwargs, words", [
    (dict(base_url="http://x"), "judge.base-url and --judge.model"),
    (dict(model="m"), "judge.base-url and --judge.model"),
    (dict(concurrency=0), "judge.concurrency"),
    (dict(retries=-1), "judge.retries"),
    (dict(timeout_s=0), "judge.timeout-s"),
    (dict(backoff_s=-1), "judge.backoff-s"),
])
def test_judge_config_is_checked_when_built(kwargs, words):
    with pytest.raises(LensError, match=words):
        JudgeConfig(**kwargs)
