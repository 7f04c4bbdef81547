import pytest

from lensml.errors import LensError
from lensml.evaluation.judge import (JudgeClient, JudgeConfig, find_judge_prompts, judge_messages, load_judge_prompts,
                                     parse_rating)
from tests.evaluation.judge_server import FakeJudge

MESSAGES = [{"role": "system", "content": "grade"}, {"role": "user", "content": "Q: 1+1? A: 2"}]


def _config(url: str, tmp_path, **kw) -> JudgeConfig:
    return JudgeConfig(base_url=url, model="judge-1", cache_dir=str(tmp_path / "cache"), backoff_s=0.01, **kw)


def test_parse_rating():
    assert parse_rating("Good answer. Rating: [[7]]") == 7.0
    assert parse_rating("Rating: [[8.5]] (was [[3]] before)") == 8.5
    assert parse_rating("Rating: [6]") == 6.0
    assert parse_rating("I cannot rate this.") is None


def test_score_key_header_and_cache_hit_on_rerun(tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_TEST_JUDGE_KEY", "sk-test-123")
    with FakeJudge() as server:
        client = JudgeClient(_config(server.base_url, tmp_path, api_key_env="LENS_TEST_JUDGE_KEY"))
        first = client.judge(MESSAGES)
        assert (first.rating, first.cached) == (7.0, False) and len(server.requests) == 1
        sent = server.requests[0]
        assert sent["model"] == "judge-1" and sent["messages"] == MESSAGES and sent["temperature"] == 0
        assert server.headers[0]["Authorization"] == "Bearer sk-test-123"
        rerun = JudgeClient(_config(server.base_url, tmp_path, api_key_env="LENS_TEST_JUDGE_KEY")).judge(MESSAGES)
        assert (rerun.rating, rerun.cached) == (7.0, True) and len(server.requests) == 1
        other_model = JudgeClient(JudgeConfig(base_url=server.base_url, model="judge-2", cache_dir=str(tmp_path / "cache")))
        assert not other_model.judge(MESSAGES).cached and len(server.requests) == 2
    cached_text = "".join(p.read_text() for p in (tmp_path / "cache").glob("*.json"))
    assert "sk-test-123" not in cached_text


def test_retry_on_500_then_success(tmp_path):
    with FakeJudge(fail_first=2) as server:
        judgment = JudgeClient(_config(server.base_url, tmp_path)).judge(MESSAGES)
        assert judgment.rating == 7.0 and len(server.requests) == 3


def test_failures_after_all_retries_are_reported_and_not_cached(tmp_path):
    with FakeJudge(fail_first=10) as server:
        client = JudgeClient(_config(server.base_url, tmp_path, retries=2))
        judgment = client.judge(MESSAGES)
        assert judgment.rating is None and "HTTP 500" in judgment.error and len(server.requests) == 3
        server.fail_first = 0
        assert client.judge(MESSAGES).rating == 7.0  # nothing bad was cached


def test_client_errors_are_not_retried(tmp_path):
    with FakeJudge(fail_first=5, status=401) as server:
        with pytest.raises(LensError, match="HTTP 401"):
            JudgeClient(_config(server.base_url, tmp_path)).judge(MESSAGES)
        assert len(server.requests) == 1


def test_concurrent_judging_keeps_order_and_asks_duplicates_once(tmp_path):
    conversations = [[{"role": "user", "content": f"q{i % 3}"}] for i in range(7)]
    with FakeJudge(reply="[[5]]") as server:
        results = JudgeClient(_config(server.base_url, tmp_path, concurrency=3)).judge_many(conversations)
        assert [r.rating for r in results] == [5.0] * 7 and len(server.requests) == 3


def test_configuration_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LENS_NO_SUCH_KEY", raising=False)
    with pytest.raises(LensError, match="LENS_NO_SUCH_KEY"):
        JudgeClient(JudgeConfig(base_url="http://127.0.0.1:9", model="m", api_key_env="LENS_NO_SUCH_KEY"))
    with pytest.raises(LensError, match="both --judge.base-url and --judge.model"):
        JudgeClient(JudgeConfig(base_url="http://127.0.0.1:9"))
    with pytest.raises(LensError, match="pass --judge.prompts"):
        find_judge_prompts(tmp_path / "question.jsonl")
    with pytest.raises(LensError, match="does not exist"):
        load_judge_prompts(tmp_path / "judge_prompts.jsonl")
    partial = tmp_path / "judge_prompts.jsonl"
    partial.write_text('{"name": "single-v1", "system_prompt": "s", "prompt_template": "{question} {answer}"}\n')
    with pytest.raises(LensError, match="lacks the FastChat judge prompts single-v1-multi-turn"):
        load_judge_prompts(partial)


def test_fastchat_prompt_choice(fixtures):
    path = find_judge_prompts(fixtures / "mt-bench" / "zh" / "question.jsonl")
    prompts = load_judge_prompts(path)
    turns, answers = ["三加五等于多少？", "再乘以二呢？"], ["八", "十六"]
    plain = judge_messages(prompts, "zh_writing", turns, answers, None, 1)
    assert plain[0]["content"] == prompts["single-v1"]["system_prompt"]
    assert "<question>\n三加五等于多少？\n</question>" in plain[1]["content"] and "<answer>\n八\n</answer>" in plain[1]["content"]
    math1 = judge_messages(prompts, "zh_math", turns, answers, ["8", "16"], 1)
    assert "<reference>\n8\n</reference>" in math1[1]["content"]
    math2 = judge_messages(prompts, "math", turns, answers, ["8", "16"], 2)
    assert "<reference>8 / 16</reference>" in math2[1]["content"] and "<assistant>十六</assistant>" in math2[1]["content"]
    no_ref = judge_messages(prompts, "math", turns, answers, None, 2)
    assert no_ref[0]["content"] == prompts["single-v1-multi-turn"]["system_prompt"]
