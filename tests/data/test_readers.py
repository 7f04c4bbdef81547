"""The shared file readers: (row, where) contracts, and one-line errors naming the file and line."""

import json

import pytest

from lensml.data import loaders, readers
from lensml.errors import LensError


def test_loaders_reexports_the_readers():
    for name in ("iter_jsonl", "read_jsonl", "iter_json_array", "iter_csv", "iter_table", "read_json"):
        assert getattr(loaders, name) is getattr(readers, name) and name in loaders.__all__


def test_iter_jsonl_and_read_jsonl(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes('\ufeff{"q": 1}\n\n{"q": 2}\n'.encode("utf-8"))  # a BOM is fine, blank lines skipped
    assert list(readers.iter_jsonl(path)) == [({"q": 1}, f"{path}:1"), ({"q": 2}, f"{path}:3")]
    assert readers.read_jsonl(path) == [{"q": 1}, {"q": 2}]
    path.write_text('{"q": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(LensError, match=r"a.jsonl:2: expected a JSON object, got list"):
        readers.read_jsonl(path)


@pytest.mark.parametrize("doc", [[{"q": 1}, {"q": 2}], {"data": [{"q": 1}, {"q": 2}]}])
def test_iter_json_array(tmp_path, doc):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert list(readers.iter_json_array(path)) == [({"q": 1}, f"{path}: item 0"), ({"q": 2}, f"{path}: item 1")]


@pytest.mark.parametrize("text, needle", [
    ('[{"q": 1}, "x"]', r"a.json: item 1: expected a JSON object"),
    ('{"rows": []}', r"a.json: expected a JSON array"),
    ('[{"q": 1},\n {"q": ]', r"a.json:2: not valid JSON"),
])
def test_iter_json_array_errors(tmp_path, text, needle):
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LensError, match=needle):
        list(readers.iter_json_array(path))


def test_iter_csv_lines_and_delimiter(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('q,a\n1,"multi\nline"\n2,b\n', encoding="utf-8")
    assert list(readers.iter_csv(path)) == [({"q": "1", "a": "multi\nline"}, f"{path}:3"),
                                            ({"q": "2", "a": "b"}, f"{path}:4")]
    tsv = tmp_path / "a.tsv"
    tsv.write_text("q\ta\n1\tx,y\n", encoding="utf-8")
    assert list(readers.iter_table(tsv)) == [({"q": "1", "a": "x,y"}, f"{tsv}:2")]


@pytest.mark.parametrize("reader, suffix", [(readers.iter_csv, ".csv"), (readers.iter_json_array, ".json"),
                                            (readers.iter_jsonl, ".jsonl")])
def test_latin1_files_name_file_line_and_fix(tmp_path, reader, suffix):
    path = tmp_path / f"old{suffix}"
    body = {".csv": "q\nok\ncaf\xe9\n", ".json": '[\n{"q": "ok"},\n{"q": "caf\xe9"}\n]',
            ".jsonl": '{"q": "ok"}\n{"q": "caf\xe9"}\n'}[suffix]
    path.write_bytes(body.encode("latin-1"))
    line = 3 if suffix != ".jsonl" else 2
    with pytest.raises(LensError, match=rf"old{suffix}:{line}: not UTF-8 text \(byte 0xe9\): re-save the file as UTF-8"):
        list(reader(path))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(LensError, match="does not exist"):
        list(readers.iter_csv(tmp_path / "nope.csv"))
    with pytest.raises(LensError, match="is a folder"):
        list(readers.iter_jsonl(tmp_path))
