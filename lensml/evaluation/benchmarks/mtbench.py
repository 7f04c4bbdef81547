"""MT-Bench: two-turn answers, language fidelity, degeneration, and an optional judge.

Turn 2 is generated with the whole conversation in the chat template
([user 1, assistant answer 1, user 2]), as FastChat does, so a model that loses the
language on the second turn is caught. Answers are greedy (FastChat samples some
categories at temperature 0.7; greedy keeps runs reproducible). Fidelity alone is
fooled by a model that echoes a Chinese question back, so echo, loop, empty and
distinct-n are reported beside it, and "clean fidelity" counts only answers in the
right language that are not degenerate. No judge configured means no score:
the result says `"judged": false` and carries fidelity only.

The answers file is written before the judge is asked, and a judge that refuses or
cannot be reached (401, 404, a closed port, 5xx or timeouts after every retry, HTML or
non-UTF-8 replies) leaves the answers and the fidelity results in place: the ratings it
gave are kept (the score averages them, with n_rated and n_failed), each turn without one
says why in the answers file, the entry carries `judge_error`, and `lens eval` exits
non-zero naming the saved answers, so generation time is never thrown away.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lensml.errors import LensError
from lensml.evaluation.benchmarks.base import GenerationBenchmark, GenerationConfig, HubSource, RunContext, TaskSpec
from lensml.evaluation.benchmarks.sources import data_path, resolve_local, select_indices, source_rows
from lensml.evaluation.degeneration import degeneration, distinct_n
from lensml.evaluation.judge import JudgeClient, JudgeConfig, find_judge_prompts, judge_messages, load_judge_prompts
from lensml.evaluation.metrics import share, stderr_of_mean
from lensml.io import write_jsonl_atomic
from lensml.runtime.generation import generate_answers

__all__ = ["MTBench", "Question", "GenerationConfig", "TaskSpec", "load_questions", "answer_questions",
           "fidelity_summary", "judge_answers"]

log = logging.getLogger(__name__)


@dataclass
class Question:
    question_id: str | int
    category: str
    turns: list[str]
    reference: list[str] | None
    where: str


def _question(row: dict, where: str) -> Question:
    turns = row.get("turns", row.get("prompt"))
    if not isinstance(turns, list) or len(turns) != 2 or not all(isinstance(t, str) and t.strip() for t in turns):
        raise LensError(f"{where}: missing field 'turns' (two non-empty user turns)")
    qid = row.get("question_id", row.get("prompt_id"))
    if qid is None:
        raise LensError(f"{where}: missing field 'question_id'")
    reference = row.get("reference") or None
    if reference is not None and not (isinstance(reference, list) and all(isinstance(r, str) for r in reference)):
        raise LensError(f"{where}: field 'reference' must be a list of strings")
    return Question(qid, str(row.get("category") or ""), turns, reference, where)


def load_questions(spec: TaskSpec, limit: int | None = None, seed: int = 1234, data_dir: str | None = None,
                   sample: int | None = None) -> tuple[list[Question], str, Path | None, int]:
    """Questions from a FastChat question.jsonl (file or folder) or the Hub (English only): the first `limit`,
    or `sample` drawn with `seed`, else all; their source, the local file, and how many the source holds."""
    rows, source, path = source_rows(MTBench(), spec, data_dir)
    questions = [_question(row, where) for row, where in rows]
    if not questions:
        raise LensError(f"{source}: no questions (empty file?)")
    chosen = [questions[i] for i in select_indices(len(questions), limit, sample, seed)]
    log.info("%s: %d of %d questions from %s", spec, len(chosen), len(questions), source)
    return chosen, source, path, len(questions)


def answer_questions(model, tokenizer, questions: list[Question], cfg: GenerationConfig) -> list[list[str]]:
    """[answer 1, answer 2] per question; turn 2 sees the conversation so far."""
    first = [[{"role": "user", "content": q.turns[0]}] for q in questions]
    a1 = generate_answers(model, tokenizer, first, cfg.max_new_tokens, cfg.batch_size, cfg.max_length, desc="mt-bench turn 1")
    second = [conv + [{"role": "assistant", "content": a}, {"role": "user", "content": q.turns[1]}]
              for conv, a, q in zip(first, a1, questions)]
    a2 = generate_answers(model, tokenizer, second, cfg.max_new_tokens, cfg.batch_size, cfg.max_length, desc="mt-bench turn 2")
    return [[x, y] for x, y in zip(a1, a2)]


def fidelity_summary(lang: str, questions: list[Question], answers: list[list[str]],
                     identify: Callable[[str], str], suffix: str = "") -> tuple[dict, dict]:
    """Fidelity metrics over all answers, and per-answer details (detected language, flags)."""
    prompts = [q.turns[t] for q in questions for t in (0, 1)]
    flat = [a[t] for a in answers for t in (0, 1)]
    detected = [identify(a) for a in flat]
    flags = degeneration(prompts, flat)
    right = [d == lang for d in detected]
    clean = [r and not g for r, g in zip(right, flags["degenerate"])]
    n = len(flat)
    summary = {f"fidelity{suffix}": share(right), f"fidelity{suffix}_stderr": stderr_of_mean(share(right), n),
               f"clean_fidelity{suffix}": share(clean),
               f"fidelity{suffix}_turn1": share(right[0::2]), f"fidelity{suffix}_turn2": share(right[1::2])}
    if not suffix:
        summary.update(echo=share(flags["echo"]), loop=share(flags["loop"]), empty=share(flags["empty"]),
                       degenerate=share(flags["degenerate"]), distinct_1=distinct_n(flat, 1), distinct_2=distinct_n(flat, 2))
    details = {f"langid{suffix}": detected}
    if not suffix:
        details.update({k: flags[k] for k in ("echo", "loop", "empty")})
    return summary, details


def judge_answers(judge_cfg: JudgeConfig, questions: list[Question], answers: list[list[str]],
                  question_file: Path | None) -> tuple[dict, list[list[float | None]], list[list[str | None]]]:
    """Judge both turns of every answer; the score averages the turns that got a rating.

    Returns the summary, the ratings per question and turn, and why each missing rating is missing
    (None where rated). A judge that was never reached or refused is `judge_error` (with how many
    turns it cost), never "no parsable rating", which is kept for replies without a rating in them.
    """
    prompts = load_judge_prompts(judge_cfg.prompts or find_judge_prompts(question_file))
    client = JudgeClient(judge_cfg)
    conversations = [judge_messages(prompts, q.category, q.turns, a, q.reference, turn)
                     for q, a in zip(questions, answers) for turn in (1, 2)]
    judgments = client.judge_many(conversations)
    ratings = [j.rating for j in judgments]
    reasons = [j.error if j.error else None if j.rating is not None else UNPARSABLE for j in judgments]
    per_question = [ratings[i:i + 2] for i in range(0, len(ratings), 2)]
    rated = [r for r in ratings if r is not None]
    failed = [j.error for j in judgments if j.error]
    mean = sum(rated) / len(rated) if rated else None
    var = sum((r - mean) ** 2 for r in rated) / (len(rated) - 1) if len(rated) > 1 else None
    turn = {t: [r for r in ratings[t - 1::2] if r is not None] for t in (1, 2)}
    summary = {"judged": bool(rated), "judge_model": judge_cfg.model, "score": mean,
               "score_stderr": math.sqrt(var / len(rated)) if var is not None else None,
               "score_turn1": sum(turn[1]) / len(turn[1]) if turn[1] else None,
               "score_turn2": sum(turn[2]) / len(turn[2]) if turn[2] else None,
               "n_rated": len(rated), "n_unrated": len(ratings) - len(rated) - len(failed), "n_failed": len(failed),
               "n_cached": sum(j.cached for j in judgments)}
    if failed:
        reason, count = Counter(failed).most_common(1)[0]
        others = f" ({len(failed) - count} with other errors)" if count < len(failed) else ""
        summary["judge_error"] = f"{len(failed)} of {len(judgments)} judge requests got no rating: {reason}{others}"
    if not rated:
        summary.pop("score")
        summary["note"] = ("the judge answered but gave no parsable rating: no score is reported" if not failed else
                           "the judge gave no rating (see judge_error): no score is reported")
    elif failed or summary["n_unrated"]:
        summary["note"] = (f"score over the {len(rated)} of {len(ratings)} turns rated; {len(failed)} got no answer "
                           f"from the judge, {summary['n_unrated']} an answer without a parsable rating")
    return summary, per_question, [reasons[i:i + 2] for i in range(0, len(reasons), 2)]


#: Why a turn has no rating when the judge answered without one.
UNPARSABLE = "the judge's answer holds no [[rating]]"


class MTBench(GenerationBenchmark):
    name = "mtbench"
    display_name = "MT-Bench"
    aliases = ("mt-bench", "mt_bench")
    hub = HubSource("HuggingFaceH4/mt_bench_prompts", "train", per_language=False, languages=("en",))
    extensions = (".jsonl",)
    data_dir_name = "mt-bench"
    preferred_file = "question.jsonl"
    lower_is_better = frozenset({"echo", "loop", "empty", "degenerate"})

    def prepare(self, spec: TaskSpec, ctx: RunContext) -> None:
        """Language identifiers, and a configured judge's prompts and key, are checked before any model time."""
        ctx.identify, ctx.glotlid  # noqa: B018 (built now so a missing backend fails first)
        judge = ctx.cfg.judge
        if judge.enabled:
            local = data_path(self, spec, ctx.cfg.data_dir)
            question_file = resolve_local(self, spec, local) if local is not None else None
            load_judge_prompts(judge.prompts or find_judge_prompts(question_file))
            JudgeClient(judge)

    def run(self, model, tokenizer, spec: TaskSpec, ctx: RunContext) -> dict:
        """Answer, score and (when a judge is configured) judge MT-Bench in one language; returns the result entry."""
        cfg = ctx.cfg
        t0 = time.perf_counter()
        questions, source, question_file, total = load_questions(spec, cfg.limit, cfg.seed, cfg.data_dir, cfg.sample)
        t_load = time.perf_counter()
        answers = answer_questions(model, tokenizer, questions, cfg.generation)
        t_gen = time.perf_counter()
        summary, details = fidelity_summary(spec.lang, questions, answers, ctx.identify)
        if ctx.glotlid is not None:
            extra, extra_details = fidelity_summary(spec.lang, questions, answers, ctx.glotlid, suffix="_glotlid")
            summary.update(extra)
            details.update(extra_details)
        t_fid = time.perf_counter()
        answers_path = ctx.path(spec, "answers.jsonl")
        rows = []
        for k, (q, a) in enumerate(zip(questions, answers)):
            row = {"question_id": q.question_id, "model_id": ctx.model_name, "category": q.category, "lang": spec.lang,
                   "turns": q.turns, "choices": [{"index": 0, "turns": a}], "tstamp": time.time()}
            row.update({key: values[2 * k:2 * k + 2] for key, values in details.items()})
            rows.append(row)
        write_jsonl_atomic(answers_path, rows)  # before the judge: a judge failure never loses the answers
        if cfg.judge.enabled:
            try:
                judged, ratings, reasons = judge_answers(cfg.judge, questions, answers, question_file)
            except (LensError, OSError, ValueError) as err:  # whatever the judge does, answers and fidelity stay
                log.warning("%s: judging failed (%s); the answers are kept in %s", spec, err, answers_path)
                summary.update(judged=False, judge_model=cfg.judge.model, judge_error=str(err),
                               note=f"judging failed ({err}): no score is reported; answers in {answers_path.name}")
            else:
                summary.update(judged)
                if "judge_error" in judged:
                    log.warning("%s: %s; the answers are kept in %s", spec, judged["judge_error"], answers_path)
                    if not judged["judged"]:
                        summary["note"] = (f"judging failed ({judged['judge_error']}): no score is reported; "
                                           f"answers in {answers_path.name}")
                for row, pair, why in zip(rows, ratings, reasons):
                    row["ratings"] = pair
                    if any(why):
                        row["unrated_because"] = why
                write_jsonl_atomic(answers_path, rows)
        else:
            summary.update(judged=False, note="no judge configured (--judge.base-url, --judge.model): no score is reported")
        t_judge = time.perf_counter()
        judged = summary.get("judged") and summary.get("score") is not None
        return {"task": self.name, "language": spec.lang, "mode": "generate", "n": len(questions), "n_total": total,
                "metric": "score" if judged else "fidelity",
                "value": summary["score"] if judged else summary["fidelity"],
                "stderr": summary["score_stderr"] if judged else summary["fidelity_stderr"],
                **summary, "source": source, "answers_file": answers_path.name,
                "max_new_tokens": cfg.generation.max_new_tokens, "limit": cfg.limit, "sample": cfg.sample,
                "seed": cfg.seed,
                "timings_s": {"load": t_load - t0, "generate": t_gen - t_load, "langid": t_fid - t_gen,
                              "judge": t_judge - t_fid, "total": time.perf_counter() - t0}}

    def metrics_of(self, entry: dict) -> dict[str, tuple[float | None, float | None]]:
        """The judge's score when there is one, then fidelity and the degeneration shares."""
        out = {"score": (entry["score"], entry.get("score_stderr"))} if entry.get("score") is not None else {}
        out["fidelity"] = (entry["fidelity"], entry.get("fidelity_stderr"))
        for key in ("clean_fidelity", "echo", "loop", "empty", "degenerate", "distinct_1", "distinct_2"):
            if entry.get(key) is not None:
                out[key] = (entry[key], None)
        return out

    def describe(self, entry: dict) -> str:
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
        if entry.get("judged") and entry.get("score") is not None:
            score = f"score {entry['score']:.2f}"
        else:
            score = "judging failed" if entry.get("judge_error") else "not judged"
        return (f"{entry['task']}:{entry['language']} n={entry['n']}: {score}; fidelity {pct(entry['fidelity'])}%, "
                f"clean {pct(entry['clean_fidelity'])}%, echo {pct(entry['echo'])}%, loop {pct(entry['loop'])}%, "
                f"empty {pct(entry['empty'])}%")
