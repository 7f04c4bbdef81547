"""`lens run`, `lens probe`, `lens train`, `lens chat` end to end on a tiny model."""

import json
from pathlib import Path

import torch

from lensml.cli import main
from lensml.lens.subspace import LanguageSubspace
from lensml.results.report import SCHEMA_VERSION, RunReport


def common(model_dir, data):
    return ["--model", str(model_dir), "--probe-data", str(data), "--train-data", str(data),
            "--eval.data", str(data), "--eval.samples", "6", "--eval.max-new-tokens", "8", "--langs", "zh,sw",
            "--lr", "1e-3"]


def no_leftovers(parent):
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_run_end_to_end(tiny_llama, parallel_data, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    xcopa = Path(__file__).parents[1] / "evaluation" / "fixtures" / "xcopa"
    assert main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--eval-tasks", f"xcopa:zh@{xcopa}"]) == 0
    printed = capsys.readouterr().out
    assert "| zh |" in printed and "answer NLL" in printed and "XCOPA Zh" in printed
    assert printed.strip().endswith(f"wrote {out}")
    report = RunReport.load(out)
    assert report.schema_version == SCHEMA_VERSION and report.method == "lens"
    assert report.languages == ["en", "zh", "sw"] and report.central == "en"
    q = report.quick_eval
    for side in ("base", "enhanced"):
        assert set(getattr(q, side)) == {"en", "zh", "sw"}
        assert all(0.0 <= s.fidelity <= 1.0 and s.n == 6 for s in getattr(q, side).values())
    assert q.retention.base_nll > 0
    assert {"probe", "train", "eval_base", "eval_enhanced", "benchmarks_base", "total"} <= set(report.timings_s)
    for side in ("base", "enhanced"):
        assert report.benchmarks[side]["lensml_results"][0]["n"] > 0
    assert (out / "eval" / "compare.md").is_file() and (out / "eval" / "base" / "results.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["train"]["lr"] == 1e-3 and len(manifest["losses"]) == 3
    assert manifest["kind"] == "run" and manifest["base_model"] == str(tiny_llama) and manifest["method"] == "lens"
    assert 0 < manifest["trainable_share"] < 1 and manifest["peak_memory"]["host_gb"] > 0
    # The per-step log is written while training runs, one line per step.
    steps = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and steps == manifest["losses"]
    # The model reloads with transformers alone and differs from the base only in the top layers.
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.chat_template
    diff = {k for k, v in model.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert diff and all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in diff)
    sub = LanguageSubspace.from_pretrained(out / "subspace")
    assert sub.languages == ["en", "zh", "sw"] and sub.hidden_size == 32
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 18
    assert {"detected", "echo", "loop", "empty"} <= set(answers[0]["base_check"])
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert no_leftovers(tmp_path)
    # lens compare reads the run folder itself: the base row and the method's row, quality and benchmarks.
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    bench = [r for r in rows if "XCOPA Zh" in r][0]
    below = rows[rows.index(bench) + 1:rows.index(bench) + 4]
    assert below[0].startswith("| base |") and below[1].startswith("| run |") and below[2].startswith("| Δ vs base")
    # The run's report.json alone is a result file: the benchmark table, base and enhanced.
    assert main(["compare", str(out / "report.json")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert "(run: base)" in rows[1] and "(run: enhanced)" in rows[2] and rows[3].startswith("| Δ vs")


def test_probe_train_chat_share_the_run_layout(tiny_gemma3, parallel_data, tmp_path, capsys):
    probe_dir, train_dir = tmp_path / "probe", tmp_path / "train"
    assert main(["probe", "--model", str(tiny_gemma3), "--probe-data", str(parallel_data), "--langs", "zh",
                 "--out", str(probe_dir)]) == 0
    assert LanguageSubspace.from_pretrained(probe_dir / "subspace").languages == ["en", "zh"]
    assert json.loads((probe_dir / "manifest.json").read_text())["base_model"] == str(tiny_gemma3)
    # --subspace takes the probe's folder; the output has the layout of a run.
    assert main(["train", "--model", str(tiny_gemma3), "--subspace", str(probe_dir), "--train-data", str(parallel_data),
                 "--langs", "zh", "--out", str(train_dir), "--train.batch-size", "4", "-v"]) == 0
    report = RunReport.load(train_dir)
    assert report.train.steps == 6 and report.quick_eval is None
    assert (train_dir / "model" / "config.json").is_file() and (train_dir / "subspace").is_dir()
    assert (train_dir / "patch" / "patch_config.json").is_file() and not (train_dir / "steering").exists()
    card = (train_dir / "model" / "README.md").read_text()
    assert "(`lens train`)" in card and f"Subspace: `{probe_dir}` (probed earlier)" in card
    capsys.readouterr()
    # chat --compare finds the base model in the manifest, given the run folder itself.
    assert main(["chat", str(train_dir), "--compare", "--prompt", "Why do cats purr?", "--max-new-tokens", "4"]) == 0
    shown = capsys.readouterr().out
    assert "--- base" in shown and "--- enhanced" in shown


def test_chat_compare_without_manifest_fails_before_loading(tmp_path, capsys, monkeypatch):
    import lensml.cli.chat as chat

    monkeypatch.setattr(chat, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    assert main(["chat", str(tmp_path), "--compare", "--prompt", "hi"]) == 2
    assert "pass --base" in capsys.readouterr().err
