"""Every data source, from small files written here (formats of the real ones, not their text)."""

import json

import pytest

from lensml.data.loaders import embedded_rows, load_rows, load_texts
from lensml.errors import LensError

LANGS = ("en", "zh", "ja", "ko", "ar", "bn", "sw")


def test_embedded_prompts_split_and_scripts():
    train, held = embedded_rows("train"), embedded_rows("heldout")
    assert len(train) == 200 and len(held) == 40
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    assert all(all(r[lang].strip() for lang in LANGS) for r in train + held)
    assert len({r["topic"] for r in held}) > 10  # held-out prompts spread over topics


def test_parallel_jsonl_and_missing_language(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"en": "Hi", "zh": "你好"}\n\n{"en": "Bye", "zh": "再见"}\n', encoding="utf-8")
    assert load_rows(str(path), ["en", "zh"]) == [{"en": "Hi", "zh": "你好"}, {"en": "Bye", "zh": "再见"}]
    assert load_texts(str(path), ["en", "zh"]) == {"en": ["Hi", "Bye"], "zh": ["你好", "再见"]}
    with pytest.raises(LensError, match="has no 'sw' texts"):
        load_rows(str(path), ["en", "sw"])


def test_bad_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"en": "a"}\n{"en": \n', encoding="utf-8")
    with pytest.raises(LensError, match=r"bad.jsonl:2: not valid JSON"):
        load_rows(str(path), ["en"])
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(LensError, match="has no rows"):
        load_rows(str(tmp_path / "empty.jsonl"), ["en"])
    with pytest.raises(LensError, match="does not exist"):
        load_rows(str(tmp_path / "nope.jsonl"), ["en"])


def test_lens_manipulation_file(tmp_path):
    doc = {"Definition": ["d"], "Positive Examples": [], "Negative Examples": [],
           "Instances": [{"input_en": "Sort these words.", "input_zh": "给这些词排序。", "output": ""},
                         {"input_en": "Name a colour.", "input_zh": "说出一种颜色。", "output": ""}]}
    path = tmp_path / "manipulation.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    assert load_rows(str(path), ["en", "zh"])[1] == {"en": "Name a colour.", "zh": "说出一种颜色。"}
    path.write_text('{"Definition": []}', encoding="utf-8")
    with pytest.raises(LensError, match="'Instances' list"):
        load_rows(str(path), ["en"])


def test_aya_local_copy_filtered_by_language(tmp_path):
    rows = [{"inputs": "What is rain?", "targets": "...", "language": "English", "language_code": "eng"},
            {"inputs": "雨是什么？", "targets": "...", "language": "Simplified Chinese", "language_code": "zho"},
            {"inputs": "Mvua ni nini?", "targets": "...", "language": "Swahili", "language_code": "swh"}]
    path = tmp_path / "aya.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    texts = load_texts(f"aya:{path}", ["en", "zh", "sw"])
    assert texts == {"en": ["What is rain?"], "zh": ["雨是什么？"], "sw": ["Mvua ni nini?"]}
    with pytest.raises(LensError, match="no 'ja' texts"):
        load_texts(f"aya:{path}", ["en", "ja"])


def test_bactrian_local_folder_aligned_by_id(tmp_path):
    en = [{"id": "a1", "instruction": "Add 2 and 3.", "input": "", "output": "5"},
          {"id": "a2", "instruction": "Translate", "input": "cat", "output": "..."},
          {"id": "a3", "instruction": "Only in English.", "input": "", "output": ""}]
    zh = [{"id": "a2", "instruction": "翻译", "input": "猫", "output": "..."},
          {"id": "a1", "instruction": "把2和3相加。", "input": "", "output": "5"}]
    for lang, rows in (("en", en), ("zh", zh)):
        (tmp_path / f"{lang}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows),
                                                encoding="utf-8")
    rows = load_rows(f"bactrian-x:{tmp_path}", ["en", "zh"], responses=["en", "zh"])
    assert rows == [{"en": "Add 2 and 3.", "zh": "把2和3相加。", "responses": {"en": "5", "zh": "5"}},
                    {"en": "Translate\ncat", "zh": "翻译\n猫", "responses": {"en": "...", "zh": "..."}}]
    with pytest.raises(LensError, match="no sw.jsonl"):
        load_rows(f"bactrian-x:{tmp_path}", ["en", "sw"])


def test_alpaca_folder_by_position_and_by_id(tmp_path):
    en = [{"instruction": "Add 2 and 3.", "input": "", "output": "It is 5."},
          {"instruction": "Translate", "input": "cat", "output": "Katze"}]
    sw = [{"instruction": "Ongeza 2 na 3.", "input": "", "output": "Ni 5."},
          {"instruction": "Tafsiri", "input": "paka", "output": "Katze"}]
    for lang, rows in (("en", en), ("sw", sw)):
        (tmp_path / f"{lang}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    rows = load_rows(f"alpaca:{tmp_path}", ["en", "sw"], responses=["sw"])
    assert rows == [{"en": "Add 2 and 3.", "sw": "Ongeza 2 na 3.", "responses": {"en": "It is 5.", "sw": "Ni 5."}},
                    {"en": "Translate\ncat", "sw": "Tafsiri\npaka", "responses": {"en": "Katze", "sw": "Katze"}}]
    (tmp_path / "sw.json").write_text(json.dumps([{"id": 2, **sw[1]}, {"id": 1, **sw[0]}]), encoding="utf-8")
    (tmp_path / "en.json").write_text(json.dumps([{"id": 1, **en[0]}, {"id": 2, **en[1]}]), encoding="utf-8")
    assert [r["sw"] for r in load_rows(f"alpaca:{tmp_path}", ["en", "sw"])] == ["Ongeza 2 na 3.", "Tafsiri\npaka"]
    (tmp_path / "sw.json").write_text(json.dumps([{"prompt": "x"}]), encoding="utf-8")
    with pytest.raises(LensError, match="sw.json row 1 has no 'instruction'"):
        load_rows(f"alpaca:{tmp_path}", ["en", "sw"])


def test_parallel_jsonl_with_responses(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"en": "Hi?", "zh": "你好？", "responses": {"en": "Hello.", "zh": "你好。"}},
            {"en": "Why?", "zh": "为什么？", "responses": {"en": "Because."}}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert load_rows(str(path), ["en", "zh"], responses=["en"])[0]["responses"] == {"en": "Hello.", "zh": "你好。"}
    with pytest.raises(LensError, match=r"qa.jsonl:2 has no 'zh' response"):
        load_rows(str(path), ["en", "zh"], responses=["zh"])
    path.write_text(json.dumps({"en": "Hi?", "zh": "你好？", "responses": "Hello."}), encoding="utf-8")
    with pytest.raises(LensError, match="'responses' is a str"):
        load_rows(str(path), ["en", "zh"], responses=["en"])


def test_hub_ids_need_the_datasets_package_or_network(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(LensError, match="pip install 'lensml\\[hub\\]'"):
        load_texts("CohereForAI/aya_dataset", ["en", "zh"])
    with pytest.raises(LensError, match="datasets package"):
        load_rows("MBZUAI/Bactrian-X", ["en", "zh"])


def test_hub_loading_calls(monkeypatch):
    """The real Hub code path, with a stand-in `datasets` module (no network here)."""
    import sys
    import types

    calls = []
    hub = {
        ("CohereForAI/aya_dataset", None): [{"inputs": "Hello?", "language_code": "eng"},
                                            {"inputs": "你好？", "language_code": "zho"}],
        ("MBZUAI/Bactrian-X", "en"): [{"id": "x", "instruction": "Count to three.", "input": ""}],
        ("MBZUAI/Bactrian-X", "zh"): [{"id": "x", "instruction": "数到三。", "input": ""}],
    }

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return hub[(name, config)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert load_texts("CohereForAI/aya_dataset", ["en", "zh"]) == {"en": ["Hello?"], "zh": ["你好？"]}
    assert load_rows("MBZUAI/Bactrian-X", ["en", "zh"]) == [{"en": "Count to three.", "zh": "数到三。"}]
    assert calls == [("CohereForAI/aya_dataset", None, "train"), ("MBZUAI/Bactrian-X", "en", "train"),
                     ("MBZUAI/Bactrian-X", "zh", "train")]


def test_plain_json_list_is_read_like_jsonl(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"en": "Hi", "zh": "你好"}, {"en": "Bye", "zh": "再见"}], ensure_ascii=False),
                    encoding="utf-8")
    assert load_rows(str(path), ["en", "zh"]) == [{"en": "Hi", "zh": "你好"}, {"en": "Bye", "zh": "再见"}]


@pytest.mark.parametrize("name, content, needle", [
    ("latin1.jsonl", '{"en": "caf\xe9"}\n'.encode("latin-1"), r"latin1.jsonl:1: not UTF-8 text .* re-save"),
    ("bad.jsonl", b'{"en": "ok"}\n{"en": "\xff\xfe"}\n', r"bad.jsonl:2: not UTF-8"),
    ("inst.json", json.dumps({"Instances": ["just a string"]}).encode(), "Instances item 0 is a str"),
    ("num.jsonl", b'{"en": 5, "zh": "x"}\n', r"num.jsonl:1: the 'en' text is a int"),
    ("list.jsonl", b'{"en": "a", "zh": ["x"]}\n', r"the 'zh' text is a list"),
    ("shape.json", b'{"something": 1}', "expected a list of rows"),
])
def test_bad_files_name_the_problem(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LensError, match=needle):
        load_rows(str(path), ["en", "zh"])


def test_column_mappings_for_files_and_hub(tmp_path, monkeypatch):
    import sys
    import types

    path = tmp_path / "cols.jsonl"
    path.write_text('{"english": "Hi", "chinese": "你好"}\n', encoding="utf-8")
    assert load_rows(f"{path}#en=english,zh=chinese", ["en", "zh"]) == [{"en": "Hi", "zh": "你好"}]
    with pytest.raises(LensError, match="no column swahili"):
        load_rows(f"{path}#en=english,sw=swahili", ["en", "sw"])
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"text": "Hello", "code": "eng"}, {"text": "你好", "code": "cmn"}, {"text": "Habari", "code": "sw"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    texts = load_texts("hf:org/mixed:v2@validation#text=text,lang=code", ["en", "zh", "sw"])
    assert texts == {"en": ["Hello"], "zh": ["你好"], "sw": ["Habari"]} and calls == [("org/mixed", "v2", "validation")]
    with pytest.raises(LensError, match="texts per language, not parallel rows"):
        load_rows("hf:org/mixed#text=text,lang=code", ["en", "zh"])
    with pytest.raises(LensError, match="say which columns"):
        load_rows("hf:org/mixed", ["en", "zh"])
    with pytest.raises(LensError, match="lang=column pairs"):
        load_rows(f"{path}#english", ["en"])


def test_rows_lacking_a_language_fail_before_the_model_loads(tiny_llama, tmp_path, capsys, monkeypatch):
    import lensml.recipes.run as recipe
    from lensml.cli import main

    monkeypatch.setattr(recipe, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    path = tmp_path / "gappy.jsonl"
    path.write_text('{"en": "Hi", "zh": "你好"}\n{"en": "Bye"}\n', encoding="utf-8")
    assert main(["run", "--model", str(tiny_llama), "--train-data", str(path), "--probe-data", str(path),
                 "--eval.data", str(path), "--langs", "zh", "--out", str(tmp_path / "out")]) == 2
    assert "gappy.jsonl:2: the 'zh' text is missing" in capsys.readouterr().err


@pytest.mark.parametrize("content, needle", [
    ('{"en": "Hi", "zh": "你好"}\n{"en": "Bye"}\n', r"gaps.jsonl:2: the 'zh' text is missing"),
    ('{"en": "Hi", "zh": "你好"}\n\n{"en": "Bye", "zh": null}\n', r"gaps.jsonl:3: the 'zh' text is null"),
    ('{"en": "Hi", "zh": "你好"}\n{"en": "  ", "zh": "再见"}\n', r"gaps.jsonl:2: the 'en' text is empty"),
])
def test_parallel_rows_need_every_language_but_probe_texts_do_not(tmp_path, content, needle):
    """Training data with a gap fails in load_rows, at its line, before any model loads."""
    path = tmp_path / "gaps.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LensError, match=needle) as err:
        load_rows(str(path), ["en", "zh"])
    assert "\n" not in str(err.value)
    texts = load_texts(str(path), ["en", "zh"])  # probe texts may be non-parallel
    assert texts["zh"] == ["你好"] or texts["en"] == ["Hi"]


def test_gap_in_a_json_list_names_the_item(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"data": [{"en": "a", "zh": "b"}, {"en": "c"}]}), encoding="utf-8")
    with pytest.raises(LensError, match=r"rows.json: item 1: the 'zh' text is missing"):
        load_rows(str(path), ["en", "zh"])


def test_file_name_with_hash_and_upper_case_codes(tmp_path):
    path = tmp_path / "set#1.jsonl"
    path.write_text('{"en": "Hi", "zh": "你好"}\n', encoding="utf-8")
    assert load_rows(str(path), ["en", "zh"]) == [{"en": "Hi", "zh": "你好"}]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("inputs,language_code\nHello,EN\n你好,zho\nHabari,swh\n", encoding="utf-8")
    texts = load_texts(f"{mixed}#text=inputs,lang=language_code", ["en", "zh", "sw"])
    assert texts == {"en": ["Hello"], "zh": ["你好"], "sw": ["Habari"]}


def test_embedded_rows_have_a_response_in_every_language_and_script():
    import re

    scripts = {"zh": r"[\u4e00-\u9fff]", "ja": r"[\u3040-\u30ff]", "ko": r"[\uac00-\ud7af]",
               "ar": r"[\u0600-\u06ff]", "bn": r"[\u0980-\u09ff]", "en": r"[A-Za-z]", "sw": r"[A-Za-z]"}
    langs = list(scripts)
    for split, n in (("embedded", 200), ("embedded:heldout", 40)):
        rows = load_rows(split, langs, responses=langs)
        assert len(rows) == n
        for row in rows:
            for lang, pattern in scripts.items():
                text = row["responses"][lang]
                assert "\n" not in text and len(re.findall(pattern, text)) >= 5, (row["id"], lang)
            words = len(row["responses"]["en"].split())
            assert 15 <= words <= 90, (row["id"], words)
