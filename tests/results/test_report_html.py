"""OUT/report.html: the before/after table, the pictures and the answers side by side, read back with html.parser."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser

import pytest

from lensml.cli import main
from lensml.errors import LensError
from lensml.evaluation.quick import Answers, QuickEvalConfig, compare
from lensml.io import write_json_atomic, write_jsonl_atomic
from lensml.results.plots import plot_run
from lensml.results.report import RunReport, TrainSummary
from lensml.results.report_html import write_report_html
from lensml.results.rundir import RunDir

SCRIPT = "<script>alert('pwned')</script> & \"quotes\""
PROMPTS = {
    "en": ["What is the capital of France?", "Name a colour of the sky.", "Why do birds sing in spring?"],
    "zh": ["法国的首都是哪里？", "天空是什么颜色的？", "为什么鸟在春天唱歌？"],
}
BASE = {
    "en": ["The capital of France is Paris, a city on the river Seine.", "The sky is usually blue during the day.",
           "Birds sing in spring to attract mates and to mark their territory."],
    "zh": ["法国的首都是哪里？", "The sky is usually blue during a clear day.", "鸟在春天唱歌是为了吸引配偶和保卫领地。"],
}
ENHANCED = {
    "en": ["Paris is the capital of France.", SCRIPT, "Birds sing in spring to find a partner for the season."],
    "zh": ["法国的首都是巴黎，它位于塞纳河畔。", "天空是蓝色的。天空是蓝色的。天空是蓝色的。天空是蓝色的。",
           "鸟在春天唱歌是为了吸引配偶和保卫领地。"],
}


class Page(HTMLParser):
    """What a reader of the page sees: tables (cells' text by row, with the row's attributes), images, scripts."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[tuple[dict, list[str]]]] = {}
        self.images: list[dict] = []
        self.scripts: list[str] = []
        self.meta: list[dict] = []
        self.links: list[str] = []
        self._table = self._row = self._cell = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = (attrs, [])
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")
        elif tag == "meta":
            self.meta.append(attrs)
        self.links += [v for k, v in attrs.items() if k in ("src", "href") and v and not v.startswith("data:")]

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append("".join(self._cell))
            self._cell = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        elif self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as `lens run` leaves it: answers scored by the real quick evaluation, report, pictures."""
    run = RunDir(tmp_path_factory.mktemp("htmlrun"))
    cfg = QuickEvalConfig()
    before = Answers(PROMPTS, "en", BASE, 2.0, [[1, 2]])
    after = Answers(PROMPTS, "en", ENHANCED, 2.1, [[1, 2]])
    quick, rows = compare(before, after, cfg)
    report = RunReport("tiny/model", "en", ["en", "zh"],
                       TrainSummary("lens", 3, 1e-3, {"loss": 0.25}, 10, 100), quick, timings_s={"total": 1.5})
    write_json_atomic(run.report, report.to_dict())
    write_jsonl_atomic(run.answers, rows)
    assert plot_run(report, [{"step": s, "loss": 1.0 / s, "lr": 1e-3} for s in (1, 2, 3)], run.plot)
    run.analysis.mkdir()
    (run.analysis / "extra.png").write_bytes(run.plot.read_bytes()[:-1] + b"\x82")  # another picture, other bytes
    (run.path / "notes.png").write_text("not a picture")  # named .png, not a PNG: left out
    return run, report, rows


def test_the_page_holds_the_report_numbers(run_folder):
    run, report, _ = run_folder
    page = parse(write_report_html(run).read_text(encoding="utf-8"))
    assert write_report_html(run) == run.report_html
    rows = page.tables["scores"]
    head, body = rows[0][1], rows[1:]
    assert head[:2] == ["language", "n"] and head[2:4] == ["fidelity base", "fidelity enhanced"]
    assert [attrs["data-language"] for attrs, _ in body] == ["en", "zh"]
    q = report.quick_eval
    for (attrs, cells) in body:
        lang = attrs["data-language"]
        expected = [f"{100 * getattr(getattr(q, side)[lang], m):.1f}%"
                    for m in ("fidelity", "clean_fidelity", "echo", "loop", "empty") for side in ("base", "enhanced")]
        assert cells == [lang, "3", *expected]
    # The scores are not all alike, so a swapped column would show.
    assert q.enhanced["zh"].fidelity != q.base["zh"].fidelity and q.enhanced["zh"].loop > 0
    text = run.report_html.read_text(encoding="utf-8")
    assert "base 2.0000, enhanced 2.1000 (+5.00%)" in text and "trained 3 steps (lens)" in text


def test_one_row_per_answer_pair_with_its_checks(run_folder):
    run, _, rows = run_folder
    page = parse(write_report_html(run).read_text(encoding="utf-8"))
    body = page.tables["answers"][1:]
    assert len(body) == len(rows) == 6
    for (attrs, cells), row in zip(body, rows):
        assert attrs["data-language"] == row["lang"]
        flags = set(attrs["data-flags"].split())
        for side in ("base", "enhanced"):
            check = row[f"{side}_check"]
            assert (f"{side}:clean" in flags) == check["clean"] and (f"{side}:unclean" in flags) != check["clean"]
            assert (f"{side}:wrong-language" in flags) == (not check["right_language"])
            for name in ("echo", "loop", "empty"):
                assert (f"{side}:{name}" in flags) == check[name]
        assert cells[1] == row["lang"] and cells[2] == row["prompt"]
        assert cells[3].startswith(row["base"]) and cells[4].startswith(row["enhanced"])

    def flags_of(column: int, start: str) -> set[str]:
        """The flags of the zh row whose base (3) or enhanced (4) answer starts so."""
        return [set(a["data-flags"].split()) for a, c in body if c[1] == "zh" and c[column].startswith(start)][0]

    assert "enhanced:loop" in flags_of(4, "天空是蓝色的。天空是蓝色的")                   # the looped answer
    assert {"base:echo", "base:unclean"} <= flags_of(3, "法国的首都是哪里？")            # the echoed question
    assert "base:wrong-language" in flags_of(3, "The sky is usually blue")    # English to a Chinese prompt
    assert "enhanced:clean" in flags_of(4, "法国的首都是巴黎")


def test_answers_are_escaped_and_only_the_page_script_runs(run_folder):
    run, _, _ = run_folder
    text = write_report_html(run).read_text(encoding="utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in text
    page = parse(text)
    cell = [c[4] for _, c in page.tables["answers"][1:] if "pwned" in c[4]][0]
    assert cell.startswith(SCRIPT)  # shown as text, exactly as the model wrote it
    assert len(page.scripts) == 1 and "filter-language" in page.scripts[0]
    csp = [m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy"][0]
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert page.links == [] and "<link" not in text and not re.search(r"https?://", text)


def test_pictures_are_embedded_pngs(run_folder):
    run, _, _ = run_folder
    page = parse(write_report_html(run).read_text(encoding="utf-8"))
    assert [img["alt"] for img in page.images] == ["report.png", "analysis/extra.png"]
    for img in page.images:
        prefix, data = img["src"].split(",", 1)
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data, validate=True) == (run.path / img["alt"]).read_bytes()
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_damaged_answers_file_is_named(tmp_path, run_folder):
    _, report, rows = run_folder
    run = RunDir(tmp_path)
    write_json_atomic(run.report, report.to_dict())
    run.answers.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"lang": "en", "prompt": "p"}) + "\n")
    with pytest.raises(LensError, match=r"answers.jsonl:2: .*missing base, enhanced, base_check, enhanced_check"):
        write_report_html(run)
    run.answers.unlink()
    with pytest.raises(LensError, match="needs a run with the quick evaluation on"):
        write_report_html(run)


def test_lens_run_writes_the_page(tiny_llama, parallel_data, tmp_path):
    """The finish stage writes it for a run with answers (and the --dry-run plan lists it)."""
    out = tmp_path / "run"
    args = ["--model", str(tiny_llama), "--probe-data", str(parallel_data), "--train-data", str(parallel_data),
            "--eval.data", str(parallel_data), "--eval.samples", "2", "--eval.max-new-tokens", "4", "--langs", "zh",
            "--lr", "1e-3", "--out", str(out)]
    assert main(["run", *args]) == 0
    page = parse(RunDir(out).report_html.read_text(encoding="utf-8"))
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(page.tables["answers"]) - 1 == len(answers) == 4
    assert [a["data-language"] for a, _ in page.tables["answers"][1:]] == [a["lang"] for a in answers]
    q = RunReport.load(out).quick_eval
    assert page.tables["scores"][1][1][2] == f"{100 * q.base['en'].fidelity:.1f}%"
    assert [img["alt"] for img in page.images] == ["report.png"]
