import json
import sys
import types

import pytest

from lensml.errors import LensError
from lensml.evaluation.tasks import TaskSpec, load_items, parse_tasks, sample_indices


def test_parse_tasks_paths_aliases_and_errors():
    specs = parse_tasks("xcopa:zh, mt-bench:en@data/q.jsonl,m_mmlu:zh@/x/y")
    assert specs == [TaskSpec("xcopa", "zh"), TaskSpec("mtbench", "en", "data/q.jsonl"), TaskSpec("m_mmlu", "zh", "/x/y")]
    for bad, words in [("xcopa", "no language"), ("hellaswag:zh", "unknown task"), ("xcopa:zh,xcopa:zh", "twice"),
                       ("", "no task"), ("xcopa:zh@", "empty path")]:
        with pytest.raises(LensError, match=words):
            parse_tasks(bad)


def test_sampling_is_seeded_bounded_and_ordered():
    a, b = sample_indices(50, 10, seed=3), sample_indices(50, 10, seed=3)
    assert a == b and len(a) == 10 and a == sorted(a) and len(set(a)) == 10
    assert sample_indices(50, 10, seed=4) != a
    assert sample_indices(5, 10, seed=3) == list(range(5))


def test_xcopa_file_and_directory(fixtures):
    items, source = load_items(TaskSpec("xcopa", "zh", str(fixtures / "xcopa" / "val.zh.jsonl")))
    assert len(items) == 4 and source.endswith("val.zh.jsonl")
    assert items[1].label == 1 and items[1].doc["question"] == "cause" and items[1].where.endswith("val.zh.jsonl:2")
    items_dir, source_dir = load_items(TaskSpec("xcopa", "sw", str(fixtures / "xcopa")))
    assert source_dir.endswith("val.sw.jsonl") and len(items_dir) == 3
    limited, _ = load_items(TaskSpec("xcopa", "zh", str(fixtures / "xcopa")), limit=2, seed=0)
    assert len(limited) == 2


def test_data_dir_layout(fixtures, tmp_path, monkeypatch):
    folder = tmp_path / "xcopa" / "zh"
    folder.mkdir(parents=True)
    (folder / "test.zh.jsonl").write_bytes((fixtures / "xcopa" / "val.zh.jsonl").read_bytes())
    (folder / "val.zh.jsonl").write_text("")  # the test split is preferred over validation
    monkeypatch.setitem(sys.modules, "datasets", None)  # and the Hub is never asked
    items, source = load_items(TaskSpec("xcopa", "zh"), data_dir=str(tmp_path))
    assert len(items) == 4 and source.endswith("test.zh.jsonl")


def test_xwinograd_hub_format_and_yandex_tsv(fixtures):
    items, _ = load_items(TaskSpec("xwinograd", "zh", str(fixtures / "xwinograd" / "zh.jsonl")))
    assert [it.label for it in items] == [0, 1, 1]
    tsv, _ = load_items(TaskSpec("xwinograd", "zh", str(fixtures / "xwinograd" / "dataset.tsv")))
    assert [it.doc["sentence"] for it in tsv] == ["猫追着老鼠跑，因为_饿了。", "狗看见猫，它叫了起来，_很害怕。"]
    assert [(it.doc["option1"], it.doc["option2"], it.label) for it in tsv] == [("猫", "老鼠", 0), ("狗", "猫", 1)]
    en, _ = load_items(TaskSpec("xwinograd", "en", str(fixtures / "xwinograd" / "dataset.tsv")))
    assert en[0].doc["sentence"] == "The cup fell off the table because _ was slippery."
    assert en[1].doc["sentence"] == 'The man told the boy "_ is late" twice.' and en[1].label == 1
    with pytest.raises(LensError, match="no items for language fr"):
        load_items(TaskSpec("xwinograd", "fr", str(fixtures / "xwinograd" / "dataset.tsv")))


def test_xstorycloze_jsonl_and_original_csv(fixtures):
    items, _ = load_items(TaskSpec("xstorycloze", "zh", str(fixtures / "xstorycloze" / "zh.jsonl")))
    assert [it.label for it in items] == [0, 1]
    csv_items, _ = load_items(TaskSpec("xstorycloze", "zh", str(fixtures / "xstorycloze" / "stories.zh.csv")))
    assert csv_items[1].doc["input_sentence_1"] == "今天下雪了，很冷。" and csv_items[1].label == 1
    assert csv_items[0].where.endswith("stories.zh.csv:2")


def test_m_mmlu_json_array(fixtures):
    items, _ = load_items(TaskSpec("m_mmlu", "zh", str(fixtures / "m_mmlu")))
    assert [it.label for it in items] == [1, 0, 3]


@pytest.mark.parametrize("rows, message", [
    ([{"premise": "a。", "choice1": "b", "choice2": "c", "question": "cause", "label": 0},
      {"premise": "a。", "choice1": "b", "question": "cause", "label": 0}], r"bad\.jsonl:2: missing field 'choice2'"),
    ([{"premise": "a。", "choice1": "b", "choice2": "c", "question": "cause", "label": 2}], r"bad\.jsonl:1: label 2 out of range"),
    ([{"premise": "a。", "choice1": "b", "choice2": "c", "question": "why", "label": 0}], r"bad\.jsonl:1: question 'why'"),
    ([{"premise": "a。", "choice1": "b", "choice2": "c", "question": "cause"}], r"bad\.jsonl:1: missing field 'label'"),
    ([], r"bad\.jsonl: no items"),
])
def test_malformed_xcopa_names_file_and_line(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(LensError, match=message):
        load_items(TaskSpec("xcopa", "zh", str(path)))


def test_malformed_other_formats(tmp_path):
    bad_json = tmp_path / "x.jsonl"
    bad_json.write_text('{"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "1"}\n{oops\n', encoding="utf-8")
    with pytest.raises(LensError, match=r"x\.jsonl:2: not valid JSON"):
        load_items(TaskSpec("xwinograd", "zh", str(bad_json)))
    no_blank = tmp_path / "w.jsonl"
    no_blank.write_text('{"sentence": "a b", "option1": "x", "option2": "y", "answer": "1"}\n', encoding="utf-8")
    with pytest.raises(LensError, match=r"w\.jsonl:1: sentence has no '_'"):
        load_items(TaskSpec("xwinograd", "zh", str(no_blank)))
    tsv = tmp_path / "d.tsv"
    tsv.write_text("zh\tsrc\t?\t只有三列\n", encoding="utf-8")
    with pytest.raises(LensError, match=r"d\.tsv:1: expected 7 tab-separated columns"):
        load_items(TaskSpec("xwinograd", "zh", str(tsv)))
    story = tmp_path / "s.csv"
    story.write_text("InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,"
                     "RandomFifthSentenceQuiz2,AnswerRightEnding\na,b,c,d,e,f,3\n", encoding="utf-8")
    with pytest.raises(LensError, match=r"s\.csv:2: answer_right_ending '3' out of range"):
        load_items(TaskSpec("xstorycloze", "zh", str(story)))
    mmlu = tmp_path / "m.json"
    mmlu.write_text('[{"instruction": "q", "option_a": "1", "option_b": "2", "option_c": "3", "answer": "A"}]')
    with pytest.raises(LensError, match=r"m\.json: item 0: missing field 'option_d'"):
        load_items(TaskSpec("m_mmlu", "zh", str(mmlu)))
    empty = tmp_path / "e.json"
    empty.write_text("")
    with pytest.raises(LensError, match=r"e\.json: no items"):
        load_items(TaskSpec("m_mmlu", "zh", str(empty)))
    with pytest.raises(LensError, match="does not exist"):
        load_items(TaskSpec("xcopa", "zh", str(tmp_path / "missing.jsonl")))


def test_hub_loading_through_datasets(monkeypatch):
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return [{"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    items, source = load_items(TaskSpec("xwinograd", "ja"))
    assert calls == [("Muennighoff/xwinograd", "jp", "test")] and items[0].label == 1
    assert source == "hf:Muennighoff/xwinograd/jp:test"

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(LensError, match=r"cannot load cambridgeltl/xcopa .*Couldn't reach.*xcopa:zh@PATH"):
        load_items(TaskSpec("xcopa", "zh"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(LensError, match=r"needs the datasets package"):
        load_items(TaskSpec("m_mmlu", "zh"))
