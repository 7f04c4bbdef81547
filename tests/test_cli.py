"""`lens run`, `lens probe`, `lens train`, `lens chat` end to end on a tiny model, and bad inputs."""

import json
from pathlib import Path

import pytest
import torch

from lensml.cli import main
from lensml.subspace import LanguageSubspace


def _common(model_dir, data):
    return ["--model", str(model_dir), "--probe-data", str(data), "--train-data", str(data),
            "--eval.data", str(data), "--eval.samples", "6", "--eval.max_new_tokens", "8", "--langs", "zh,sw",
            "--lr", "1e-3"]


def _no_leftovers(parent):
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_run_end_to_end(tiny_llama, parallel_data, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    xcopa = Path(__file__).parent / "evaluation" / "fixtures" / "xcopa"
    assert main(["run", *_common(tiny_llama, parallel_data), "--out", str(out), "--eval-tasks", f"xcopa:zh@{xcopa}"]) == 0
    table = capsys.readouterr().out
    assert "| zh |" in table and "answer NLL" in table and "XCOPA Zh" in table
    report = json.loads((out / "report.json").read_text())
    assert report["languages"] == ["en", "zh", "sw"] and report["central"] == "en"
    for side in ("base", "enhanced"):
        assert set(report["fidelity"][side]) == {"en", "zh", "sw"}
        assert all(0.0 <= v <= 1.0 for v in report["fidelity"][side].values())
    assert report["english_retention"]["base_nll"] > 0
    assert {"probe", "train", "eval_base", "eval_enhanced", "eval_tasks", "total"} <= set(report["timings_s"])
    for side in ("base", "enhanced"):
        assert report["eval_tasks"][side]["xcopa:zh"]["n"] > 0
    assert (out / "eval" / "compare.md").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["train"]["lr"] == 1e-3 and len(manifest["losses"]) == 3
    assert 0 < manifest["trainable_share"] < 1 and manifest["peak_memory"]["host_gb"] > 0
    # The model reloads with transformers alone and differs from the base only in the top layers.
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.chat_template
    diff = {k for k, v in model.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert diff and all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in diff)
    sub = LanguageSubspace.from_pretrained(out / "subspace")
    assert sub.languages == ["en", "zh", "sw"] and sub.hidden_size == 32
    assert len((out / "answers.jsonl").read_text().splitlines()) == 18
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert _no_leftovers(tmp_path)
    # chat --compare finds the base model in the manifest.
    assert main(["chat", str(out / "model"), "--compare", "--prompt", "Why do cats purr?", "--max-new-tokens", "4"]) == 0
    shown = capsys.readouterr().out
    assert "--- base" in shown and "--- enhanced" in shown


def test_probe_then_train(tiny_gemma3, parallel_data, tmp_path):
    sub_dir, model_dir = tmp_path / "sub", tmp_path / "enhanced"
    assert main(["probe", "--model", str(tiny_gemma3), "--probe-data", str(parallel_data), "--langs", "zh",
                 "--out", str(sub_dir)]) == 0
    assert LanguageSubspace.from_pretrained(sub_dir).languages == ["en", "zh"]
    assert main(["train", "--model", str(tiny_gemma3), "--subspace", str(sub_dir), "--train-data", str(parallel_data),
                 "--langs", "zh", "--out", str(model_dir), "--train.batch_size", "4"]) == 0
    summary = json.loads((model_dir / "lensml_train.json").read_text())
    assert summary["steps"] == 6 and (model_dir / "config.json").is_file()


def _fails(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may come before it
    assert err.startswith("error: ") and needle in err, err


@pytest.mark.parametrize("extra, needle", [
    (["--langs", "xx"], "unknown language code 'xx'"),
    (["--langs", "ja"], "has no 'ja' texts"),
    (["--probe-samples", "1000"], "1000 asked"),
    (["--train-samples", "500"], "500 asked"),
    (["--model", "./does/not/exist"], "does not exist"),
    (["--retain", "sometimes"], "retain must be"),
    (["--train.lr", "fast"], "cannot read 'fast'"),
    (["--no.such", "1"], "unrecognized"),
])
def test_bad_run_inputs(extra, needle, tiny_llama, parallel_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", *_common(tiny_llama, parallel_data), "--out", str(out), *extra]
    if needle == "unrecognized":
        with pytest.raises(SystemExit):
            main(argv)
        return
    _fails(argv, capsys, needle)
    assert not out.exists() and _no_leftovers(tmp_path)


def test_existing_output_is_refused(tiny_llama, parallel_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(["run", *_common(tiny_llama, parallel_data), "--out", str(out)], capsys, "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


def test_subspace_model_mismatch(tiny_llama, parallel_data, tmp_path, capsys):
    sub_dir = tmp_path / "sub"
    LanguageSubspace.fit(torch.randn(4, 2, 16, dtype=torch.float64), ["en", "zh"], "en").save_pretrained(sub_dir)
    _fails(["train", "--model", str(tiny_llama), "--subspace", str(sub_dir), "--train-data", str(parallel_data),
            "--langs", "zh", "--out", str(tmp_path / "m")], capsys, "hidden size 16")
    _fails(["train", "--model", str(tiny_llama), "--subspace", str(tmp_path / "nope"), "--train-data",
            str(parallel_data), "--langs", "zh", "--out", str(tmp_path / "m")], capsys, "not a lensml subspace")
    assert not (tmp_path / "m").exists()
