"""A judge that never gives a rating (closed port, HTTP 500, a reply after the timeout, an HTML page, a 429
with a huge Retry-After, bytes that are not UTF-8): answers and fidelity are kept, what was judged is written,
the reason for the rest is said exactly (never "no parsable rating"), and `lens eval` exits 2."""

import json
import socket

import pytest

from lensml.cli import main
from lensml.evaluation.benchmarks.base import GenerationConfig
from lensml.evaluation.judge import JudgeConfig
from lensml.evaluation.suite import EvalConfig, evaluate
from tests.evaluation.judge_server import FakeJudge


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more


class Closed:
    """The FakeJudge interface for an endpoint where nothing listens."""

    base_url = _closed_port_url()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


FAULTS = {
    "closed port": (lambda: Closed(), {}, "cannot reach http://127.0.0.1:"),
    "HTTP 500": (lambda: FakeJudge(fail_first=100, status=500), {}, "HTTP 500 (after 2 tries)"),
    "reply after the timeout": (lambda: FakeJudge(delay_s=0.6), {"timeout_s": 0.15}, "within 0.15 s (--judge.timeout-s)"),
    "HTML 200": (lambda: FakeJudge(raw=b"<!doctype html><html><body>Login</body></html>", content_type="text/html"),
                 {}, "with an HTML page, not a JSON reply"),
    "429, Retry-After 1 h": (lambda: FakeJudge(fail_first=100, status=429, fail_headers={"Retry-After": "3600"}),
                             {"retry_after_max_s": 0.05}, "HTTP 429 (Retry-After 3600 s) (after 2 tries)"),
    "not UTF-8": (lambda: FakeJudge(raw=b'{"choices": [{"message": {"content": "\xff\xfe [[7]]"}}]}'), {},
                  "bytes that are not UTF-8"),
}


def _cfg(url, tmp_path, fixtures, **judge) -> EvalConfig:
    return EvalConfig(tasks=f"mtbench:zh@{fixtures / 'mt-bench' / 'zh'}", limit=2,
                      generation=GenerationConfig(max_new_tokens=2),
                      judge=JudgeConfig(base_url=url, model="j", cache_dir=str(tmp_path / "cache"), backoff_s=0.01,
                                        retries=1, concurrency=4, **judge))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_judge_that_gives_no_rating_keeps_answers_and_says_why(fault, tiny, fixtures, tmp_path):
    server, options, reason = FAULTS[fault]
    with server() as judge:
        doc = evaluate(*tiny, "tiny", _cfg(judge.base_url, tmp_path, fixtures, **options), tmp_path / "out")
    (mt,) = doc["lensml_results"]
    assert mt["judged"] is False and "score" not in mt and mt["metric"] == "fidelity"
    assert 0.0 <= mt["fidelity"] <= 1.0 and mt["n"] == 2
    assert (mt["n_rated"], mt["n_unrated"], mt["n_failed"]) == (0, 0, 4)
    assert mt["judge_error"].startswith("4 of 4 judge requests got no rating: ") and reason in mt["judge_error"]
    assert "parsable" not in mt["note"] and mt["judge_error"] in mt["note"]
    written = json.loads((tmp_path / "out" / "results.json").read_text())["lensml_results"][0]
    assert written["judge_error"] == mt["judge_error"] and written["fidelity"] == mt["fidelity"]
    rows = [json.loads(line) for line in (tmp_path / "out" / mt["answers_file"]).open()]
    assert len(rows) == 2 and all(r["ratings"] == [None, None] for r in rows)
    assert all(reason in why for r in rows for why in r["unrated_because"])
    assert not list((tmp_path / "cache").glob("*.json"))  # nothing was cached as a judgment


def test_what_was_judged_is_kept_beside_what_was_not(tiny, fixtures, tmp_path):
    with FakeJudge(fail_first=1, status=503, reply="Fine. [[6]]") as judge:
        cfg = _cfg(judge.base_url, tmp_path, fixtures)
        cfg.judge.retries, cfg.judge.concurrency = 0, 1
        (mt,) = evaluate(*tiny, "tiny", cfg, tmp_path / "out")["lensml_results"]
    assert mt["judged"] is True and mt["metric"] == "score" and mt["score"] == 6.0
    assert (mt["n_rated"], mt["n_unrated"], mt["n_failed"]) == (3, 0, 1)
    assert mt["judge_error"] == "1 of 4 judge requests got no rating: HTTP 503 (after 1 try)"
    assert mt["note"] == "score over the 3 of 4 turns rated; 1 got no answer from the judge, 0 an answer without a parsable rating"
    rows = [json.loads(line) for line in (tmp_path / "out" / mt["answers_file"]).open()]
    assert sorted(r for row in rows for r in row["ratings"] if r is not None) == [6.0, 6.0, 6.0]


def test_a_judge_that_answers_without_a_rating_is_not_a_failure(tiny, fixtures, tmp_path):
    with FakeJudge(reply="I would rather not rate this.") as judge:
        (mt,) = evaluate(*tiny, "tiny", _cfg(judge.base_url, tmp_path, fixtures), tmp_path / "out")["lensml_results"]
    assert "judge_error" not in mt and (mt["n_unrated"], mt["n_failed"]) == (4, 0)
    assert mt["note"] == "the judge answered but gave no parsable rating: no score is reported"


@pytest.mark.parametrize("fault", ["closed port", "not UTF-8"])
def test_lens_eval_exits_2_and_keeps_the_results(fault, tiny_llama, fixtures, tmp_path, capsys):
    server, _, reason = FAULTS[fault]
    out = tmp_path / "r.json"
    with server() as judge:
        code = main(["eval", "--model", str(tiny_llama), "--tasks", f"mtbench:zh@{fixtures / 'mt-bench' / 'zh'}",
                     "--out", str(out), "--generation.max-new-tokens", "2", "--limit", "2", "--judge.retries", "0",
                     "--judge.base-url", judge.base_url, "--judge.model", "j", "--judge.cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: the judge failed on mtbench:zh (") and reason in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert json.loads(out.read_text())["lensml_results"][0]["fidelity"] is not None
    assert (tmp_path / "r.mtbench_zh.answers.jsonl").is_file()
