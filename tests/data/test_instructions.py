"""Instruction data streamed for xsft-full: the row shapes, language filtering, what is skipped, bad sources."""

import json

import pytest

from lensml.data.instructions import Tally, check_full_data, parse_sources, stream_pairs
from lensml.data.readers import stream_table
from lensml.errors import LensError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_each_known_shape_becomes_prompt_and_response(tmp_path):
    alpaca = _jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Name a fruit.", "input": "", "output": "苹果。"},
                                                {"instruction": "Translate:", "input": "cat", "output": "猫"}])
    aya = _jsonl(tmp_path / "aya.jsonl", [{"inputs": "天空为什么是蓝色的？", "targets": "因为散射。", "language_code": "zho"},
                                          {"inputs": "Why?", "targets": "Because.", "language_code": "eng"},
                                          {"inputs": "Kwa nini?", "targets": "Kwa sababu.", "language_code": "swh"}])
    chat = _jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                      {"role": "user", "content": "再见"}, {"role": "assistant", "content": "再见！"}]},
        {"messages": [{"role": "user", "content": "no answer"}]}])
    sharegpt = _jsonl(tmp_path / "sharegpt.jsonl",
                      [{"conversations": [{"from": "human", "value": "一"}, {"from": "gpt", "value": "二"}]}])
    tally = Tally()
    pairs = list(stream_pairs(f"{alpaca} + {aya} + {chat} + {sharegpt}", ["zh"], tally))
    assert [(p.prompt, p.response) for p in pairs] == [
        ("Name a fruit.", "苹果。"), ("Translate:\ncat", "猫"), ("天空为什么是蓝色的？", "因为散射。"),
        ([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
          {"role": "user", "content": "再见"}], "再见！"),
        ([{"role": "user", "content": "一"}], "二")]
    assert all(p.lang == "zh" for p in pairs) and pairs[2].where == f"{aya}:1"
    # Aya's English and Swahili rows are not Chinese; the chat row with no assistant turn has no response.
    assert tally.as_dict() == {"kept": {"zh": 5}, "rows": 5,
                               "skipped": {"other language": 2, "no prompt or response": 1}}


def test_mappings_languages_and_limits(tmp_path):
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer,lang\n什么是质数？,只有两个因数的数。,zh\nNini?,Jibu.,sw\n空的？,,zh\n", encoding="utf-8")
    both = list(stream_pairs(f"{csv}#prompt=question,response=answer,lang=lang", ["zh", "sw"]))
    assert [(p.prompt, p.lang) for p in both] == [("什么是质数？", "zh"), ("Nini?", "sw")]
    fixed = list(stream_pairs(f"{csv}#prompt=question,response=answer,language=sw", ["zh", "sw"]))
    assert [p.lang for p in fixed] == ["sw", "sw"]  # every row declared Swahili; the empty answer skipped
    assert len(list(stream_pairs(f"{csv}#prompt=question,response=answer", ["zh"], limit=1))) == 1
    with pytest.raises(LensError, match="rows carry no language and zh, sw are trained"):
        list(stream_pairs(f"{csv}#prompt=question,response=answer", ["zh", "sw"]))


def test_sources_without_responses_are_refused_before_any_model(tmp_path):
    prompts_only = _jsonl(tmp_path / "p.jsonl", [{"en": "Hi", "zh": "你好"}])
    with pytest.raises(LensError, match=r"cannot tell the prompt column among en, zh"):
        check_full_data(str(prompts_only), ["zh"])
    no_answer = _jsonl(tmp_path / "q.jsonl", [{"prompt": "你好"}])
    with pytest.raises(LensError, match=r"has no responses \(no column 'response' among prompt\).*map the response"):
        check_full_data(str(no_answer), ["zh"])
    with pytest.raises(LensError, match="no column 'answer'"):
        check_full_data(f"{no_answer}#prompt=prompt,response=answer", ["zh"])
    with pytest.raises(LensError, match="unknown key 'reply'"):
        parse_sources(f"{no_answer}#prompt=prompt,reply=x")
    with pytest.raises(LensError, match="is not a file or a Hub dataset"):
        parse_sources(str(tmp_path / "missing.jsonl"))
    with pytest.raises(LensError, match="one or more sources joined by"):
        parse_sources(f"{no_answer} + ")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(LensError, match="has no rows"):
        check_full_data(str(empty), ["zh"])


def test_hub_sources_parse_without_the_network():
    aya, bx, other = parse_sources("CohereForAI/aya_dataset + MBZUAI/Bactrian-X + hf:org/qa:v2@test#prompt=q,response=a")
    assert aya.hub == ("CohereForAI/aya_dataset", None, "train") and not aya.per_language_config
    assert bx.hub == ("MBZUAI/Bactrian-X", None, "train") and bx.per_language_config  # one config per language
    assert other.hub == ("org/qa", "v2", "test") and other.mapping == {"prompt": "q", "response": "a"}
    with pytest.raises(LensError, match="hf:OWNER/NAME"):
        parse_sources("hf:nope")


def test_stream_table_reads_row_by_row_and_names_bad_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\n{bad\n')
    rows = stream_table(path)
    assert next(rows) == ({"a": 1}, f"{path}:1") and next(rows) == ({"a": 2}, f"{path}:3")
    with pytest.raises(LensError, match=rf"{path}:4: not valid JSON"):
        next(rows)
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("x\ty\n1\t2\n", encoding="utf-8")
    assert list(stream_table(tsv)) == [({"x": "1", "y": "2"}, f"{tsv}:2")]
