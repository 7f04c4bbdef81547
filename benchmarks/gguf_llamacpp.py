"""A run's GGUF in llama.cpp itself: base and enhanced answer the run's held-out prompts, scored as lensml scores them.

OUT/model.gguf is what people run (llama.cpp, ollama, LM Studio), and transformers' GGUF loader, which
de-quantises every tensor to float and forgives a norm stored in F16, says nothing about how llama.cpp
runs it. Here llama-cpp-python (optional: `make check-gguf` builds it once from its PyPI source) runs
the base GGUF (the run manifest's base model) and OUT/model.gguf on the prompts of OUT/answers.jsonl,
greedy, the run's eval.max_new_tokens, each file's own chat template (create_chat_completion), and the
answers are scored by lensml's own checks (lensml.evaluation.quick.score_answers: the run's language
identifier, echo/loop/empty). Both fidelities are printed beside report.json's.

--types re-exports OUT/model into the source GGUF once per --gguf-out choice (no retraining: OUT/model
and the changed tensors OUT/patch lists) and measures each. Each file runs in a child process, so a
GGUF that aborts llama.cpp is reported as such instead of ending the script.

    python benchmarks/gguf_llamacpp.py runs/default
    python benchmarks/gguf_llamacpp.py runs/default --types source q8_0 f16 f32 --json gguf_llamacpp.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lensml.errors import LensError  # noqa: E402
from lensml.results.rundir import RunDir  # noqa: E402


def worker(gguf: str, prompts_path: str, out_path: str, max_tokens: int, threads: int) -> None:
    """Child process: answer every prompt with llama.cpp, greedy, and write the texts as JSON."""
    from llama_cpp import Llama  # optional dependency: only the child process needs it

    prompts = json.loads(Path(prompts_path).read_text(encoding="utf-8"))
    llm = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, seed=0, verbose=False)
    answers, start = [], time.perf_counter()
    for prompt in prompts:
        out = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                         temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                         seed=0)
        answers.append(out["choices"][0]["message"]["content"] or "")
    Path(out_path).write_text(json.dumps({"answers": answers, "seconds": time.perf_counter() - start,
                                          "chat_format": llm.chat_format}, ensure_ascii=False), encoding="utf-8")


def base_gguf(manifest: dict) -> Path:
    from lensml.runtime.models import PACKAGED_MODELS, packaged_gguf

    base = manifest.get("base_model") or ""
    if base.endswith(".gguf"):
        return Path(base)
    if base in PACKAGED_MODELS:
        return packaged_gguf(base)
    raise LensError(f"the run's base model '{base}' is not a GGUF file: only runs on a GGUF model have OUT/model.gguf")


def load_run(run: RunDir) -> tuple[dict, dict[str, list[str]], object]:
    """(manifest, held-out prompts per language in answers.jsonl's order, report.json's quick evaluation)."""
    from lensml.results.report import RunReport

    for need in (run.manifest, run.answers, run.gguf):
        if not need.is_file():
            raise LensError(f"{need} is missing: pass a `lens run` folder of a GGUF model with its quick "
                            f"evaluation on (e.g. `make run` -> runs/default)")
    manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    prompts: dict[str, list[str]] = {}
    for line in run.answers.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            prompts.setdefault(row["lang"], []).append(row["prompt"])
    return manifest, prompts, RunReport.load(run.path).quick_eval


def reexport(run: RunDir, source: Path, types: list[str], folder: Path) -> list[tuple[str, Path]]:
    """OUT/model written into the source GGUF once per --gguf-out choice (the changed tensors: OUT/patch)."""
    from lensml.export.gguf import export_gguf
    from lensml.runtime.models import ModelConfig, load_model

    tensors = json.loads((run.patch / "patch_config.json").read_text(encoding="utf-8"))["tensors"]
    model, _, _ = load_model(ModelConfig(model=str(run.model), device="cpu", dtype="float32"))
    out = []
    for kind in types:
        path = folder / f"model-{kind}.gguf"
        export_gguf(model, source, path, tensors, kind)
        out.append((f"--gguf-out {kind}", path))
    return out


def changed_types(base: Path, gguf: Path) -> str:
    """The types of the tensors that differ from the base file (what the export wrote)."""
    from gguf import GGMLQuantizationType

    from lensml.export.gguf_file import GGUFFile

    a, b = GGUFFile(base), GGUFFile(gguf)
    try:
        old = {t.name: t for t in a.tensors}
        types = {}
        for t in b.tensors:
            o = old.get(t.name)
            if o is None or o.type != t.type or bytes(a.data(o)) != bytes(b.data(t)):
                name = GGMLQuantizationType(t.type).name
                key = f"{name} ({'1-D' if len(t.dims) == 1 else f'{len(t.dims)}-D'})"
                types[key] = types.get(key, 0) + 1
        return ", ".join(f"{n}x {k}" for k, n in sorted(types.items())) or "none"
    finally:
        a.close()
        b.close()


def measure(label: str, gguf: Path, prompts: dict[str, list[str]], ident, max_tokens: int, threads: int,
            timeout: int) -> dict:
    from lensml.evaluation.quick import score_answers

    flat = [p for ps in prompts.values() for p in ps]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "prompts.json").write_text(json.dumps(flat, ensure_ascii=False), encoding="utf-8")
        cmd = [sys.executable, __file__, "--worker", str(gguf), str(Path(tmp) / "prompts.json"),
               str(Path(tmp) / "answers.json"), "--max-tokens", str(max_tokens), "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        result = {"file": label, "path": str(gguf), "bytes": gguf.stat().st_size}
        if proc.returncode != 0:
            return {**result, "error": f"exit {proc.returncode}: {_why(proc.stderr or '')}"}
        done = json.loads((Path(tmp) / "answers.json").read_text(encoding="utf-8"))
    answers, at = {}, 0
    for lang, ps in prompts.items():
        answers[lang], at = done["answers"][at:at + len(ps)], at + len(ps)
    scores = score_answers(prompts, answers, ident)
    return {**result, "seconds": round(done["seconds"], 1), "chat_format": done["chat_format"],
            "fidelity": {lang: s["fidelity"] for lang, s in scores.items()},
            "clean_fidelity": {lang: s["clean_fidelity"] for lang, s in scores.items()},
            "answers": answers}


def _why(stderr: str) -> str:
    """llama.cpp's own message (an abort prints its source line first, then a debugger's backtrace)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if re.search(r"GGML_ASSERT|unsupported|error|failed", ln, re.I)] or lines[-1:]
    return re.sub(r"^\S*?/(ggml|llama_cpp)/", r"\1/", said[0]).replace("|", "/") if said else "no message"


def table(rows: list[dict], quick, langs: list[str]) -> str:
    head = ["file", "changed tensors", "size (MiB)"] + [f"llama.cpp {lg} fidelity / clean" for lg in langs]
    head.append("lensml report (same run)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        side = "base" if r["file"] == "base" else "enhanced"
        ref = ", ".join(f"{lg} {getattr(quick, side)[lg].fidelity:.1%} / {getattr(quick, side)[lg].clean_fidelity:.1%}"
                        for lg in langs if quick is not None and lg in getattr(quick, side))
        cells = [r["file"], r.get("types", ""), f"{r['bytes'] / 2**20:.1f}"]
        if "error" in r:
            cells += [f"**llama.cpp fails**: {r['error']}"] + [""] * (len(langs) - 1)
        else:
            cells += [f"{r['fidelity'][lg]:.1%} / {r['clean_fidelity'][lg]:.1%}" for lg in langs]
        cells.append(f"{side}: {ref}" if ref else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="a `lens run` folder of a GGUF model (OUT/model.gguf, answers.jsonl)")
    p.add_argument("--types", nargs="*", default=[], help="also re-export OUT/model with these --gguf-out choices")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="llama.cpp threads (default half the cores: its threads spin, and on a shared machine more "
                        "threads than free cores slow it tenfold)")
    p.add_argument("--extra", action="append", default=[], metavar="LABEL=PATH", help="also run this GGUF file")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per answer (default: the run's eval)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per GGUF file")
    p.add_argument("--keep", type=Path, default=None, help="folder to keep the re-exported GGUF files in")
    p.add_argument("--json", type=Path, default=None, help="also write the results (answers included) here")
    p.add_argument("--worker", nargs=3, metavar=("GGUF", "PROMPTS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.max_tokens or 64, args.threads)
        return 0
    if not args.run:
        p.error("give a run folder")
    try:
        import llama_cpp  # noqa: F401  (optional dependency, checked before any work)
    except ImportError:
        print("llama-cpp-python is not installed: `make check-gguf` builds and installs it", file=sys.stderr)
        return 2
    from lensml.export.gguf import TYPES
    from lensml.runtime.langid import LanguageIdentifier

    run = RunDir(Path(args.run))
    try:
        bad = [t for t in args.types if t not in TYPES]
        if bad:
            raise LensError(f"unknown --types {bad[0]}: use some of {', '.join(TYPES)}")
        manifest, prompts, quick = load_run(run)
        source = base_gguf(manifest)
        eval_cfg = manifest.get("config", {}).get("eval", {})
        max_tokens = args.max_tokens or eval_cfg.get("max_new_tokens", 64)
        ident = LanguageIdentifier(eval_cfg.get("langid", "lingua"), eval_cfg.get("glotlid_model"))
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.keep or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            files = [("base", source), ("OUT/model.gguf", run.gguf), *reexport(run, source, args.types, folder)]
            for item in args.extra:
                label, _, path = item.rpartition("=")
                if not label or not Path(path).is_file():
                    raise LensError(f"--extra {item}: give LABEL=PATH of an existing GGUF file")
                files.append((label, Path(path)))
            rows = []
            for label, path in files:
                t0 = time.perf_counter()
                row = measure(label, path, prompts, ident, max_tokens, args.threads, args.timeout)
                row["types"] = "as packaged" if label == "base" else changed_types(source, path)
                rows.append(row)
                got = row.get("error") or ", ".join(f"{lg} {v:.1%}" for lg, v in row["fidelity"].items())
                print(f"{label}: {got} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    except LensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    langs = list(prompts)
    print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) on {run.path}: {sum(map(len, prompts.values()))} "
          f"held-out prompts, greedy, {max_tokens} tokens, each GGUF's own chat template\n")
    print(table(rows, quick, langs))
    if args.json:
        args.json.write_text(json.dumps({"run": str(run.path), "max_tokens": max_tokens, "rows": rows},
                                        ensure_ascii=False, indent=1), encoding="utf-8")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
