"""Mutation pass over the modules that produce reported numbers: does a deliberate bug make a test fail?

Not part of CI (about 5-10 minutes on 2 cores). Each mutation is a small, plausible bug (an off-by-one
position, a wrong language, a swapped ratio) in one of the modules behind a number lensml prints or writes:
metrics, degeneration, the quick evaluation, scores, the subspace (LSAR), the losses, probing, the patch
fingerprint, multiple-choice scoring, steering's strength choice and the GGUF layout. For each, the repository is
mutated in a temporary copy (never in place: other work goes on in the tree), only the tests that cover that
module run, and the mutation is "caught" when they fail. A copy whose selected tests fail before any mutation
stops the pass: a mutation can only be judged against a green baseline.

    .venv/bin/python benchmarks/mutation_pass.py                 # every mutation, caught/total at the end
    .venv/bin/python benchmarks/mutation_pass.py --only probe    # those whose name contains "probe"
    .venv/bin/python benchmarks/mutation_pass.py --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", "lensml.egg-info"}


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str          # file in the repository
    old: str           # text that must occur exactly once
    new: str           # what it becomes
    tests: tuple[str, ...]  # test files or node ids that should catch it


QUICK = ("tests/evaluation/test_quick.py", "tests/evaluation/test_quick_cache.py")
DEGEN = ("tests/evaluation/test_degeneration.py", "tests/evaluation/test_quick.py")
SCORING = ("tests/evaluation/test_scoring.py",)

MUTATIONS = [
    # metrics: the arithmetic behind every share and standard error
    Mutation("metrics.share_denominator", "lensml/evaluation/metrics.py",
             "sum(bool(f) for f in flags) / len(flags)", "sum(bool(f) for f in flags) / (len(flags) + 1)",
             QUICK + SCORING),
    Mutation("metrics.stderr_population", "lensml/evaluation/metrics.py",
             "math.sqrt(p * (1 - p) / (n - 1))", "math.sqrt(p * (1 - p) / n)", SCORING),
    # degeneration: echo, loop, empty
    Mutation("degeneration.loop_needs_four", "lensml/evaluation/degeneration.py",
             r'(?:\s*\1){2,}', r'(?:\s*\1){3,}', DEGEN),
    Mutation("degeneration.sentence_gap", "lensml/evaluation/degeneration.py",
             "zip(sents, sents[1:])", "zip(sents, sents[2:])", DEGEN),
    Mutation("degeneration.echo_strict", "lensml/evaluation/degeneration.py",
             "return echo_share(prompt, answer) >= threshold", "return echo_share(prompt, answer) > threshold", DEGEN),
    Mutation("degeneration.empty_not_degenerate", "lensml/evaluation/degeneration.py",
             '"degenerate": [e or lp or em', '"degenerate": [e or lp', DEGEN),
    Mutation("degeneration.min_sentence", "lensml/evaluation/degeneration.py",
             "MIN_SENTENCE_CHARS = 10", "MIN_SENTENCE_CHARS = 3", DEGEN),
    # quick evaluation
    Mutation("quick.clean_or", "lensml/evaluation/quick.py",
             "clean = [r and not g for r, g in zip(right, flags[\"degenerate\"])]",
             "clean = [r or not g for r, g in zip(right, flags[\"degenerate\"])]", QUICK),
    Mutation("quick.fidelity_any_language", "lensml/evaluation/quick.py",
             "right = [d == lang for d in detected]", "right = [bool(d) for d in detected]", QUICK),
    Mutation("quick.key_ignores_length", "lensml/evaluation/quick.py",
             '"central": central, "max_new_tokens": cfg.max_new_tokens,', '"central": central,', QUICK),
    Mutation("quick.retention_swapped", "lensml/evaluation/quick.py",
             "Retention(before.central_nll, after.central_nll)", "Retention(after.central_nll, before.central_nll)",
             QUICK),
    Mutation("scores.relative_change_inverted", "lensml/evaluation/scores.py",
             "(self.enhanced_nll - self.base_nll) / self.base_nll", "(self.enhanced_nll - self.base_nll) / self.enhanced_nll",
             ("tests/results/test_report.py",)),
    # the subspace (LSAR)
    Mutation("subspace.uncentred_fit", "lensml/lens/subspace.py",
             "torch.linalg.svd(M - mu, full_matrices=False)", "torch.linalg.svd(M, full_matrices=False)",
             ("tests/lens/test_subspace.py",)),
    Mutation("subspace.m_a_unscaled", "lensml/lens/subspace.py",
             "m_a = m_a / m_a.dot(m_a)", "m_a = m_a / m_a.norm()", ("tests/lens/test_subspace.py",)),
    Mutation("subspace.direction_from_target", "lensml/lens/subspace.py",
             "return m_s @ (m_s.T @ diff)", "return m_s @ (m_s.T @ self.means[layer, self.languages.index(lang)])",
             ("tests/lens/test_subspace.py",)),
    # the losses
    Mutation("losses.lambda_of_central", "lensml/lens/losses.py",
             "deltas[lang], cfg.lambdas.get(lang, 1.0), cfg)", "deltas[lang], cfg.lambdas.get(central, 1.0), cfg)",
             ("tests/lens/test_losses.py",)),
    Mutation("losses.retain_both_one_term", "lensml/lens/losses.py",
             'if cfg.retain in ("last", "both"):', 'if cfg.retain == "last":', ("tests/lens/test_losses.py",)),
    Mutation("losses.push_sign", "lensml/lens/losses.py",
             "project_specific(x_l - x_l_ref, m_s) - lam * delta", "project_specific(x_l - x_l_ref, m_s) + lam * delta",
             ("tests/lens/test_losses.py",)),
    # probing
    Mutation("probing.token_before_last", "lensml/lens/probing.py",
             "    idx = batch.last_index\n", "    idx = (batch.last_index - 1).clamp(min=0)\n",
             ("tests/lens/test_probing.py",)),
    Mutation("probing.final_before_norm", "lensml/lens/probing.py",
             "handles = [layer.register_forward_hook(keep) for layer in layers[:-1]]",
             "handles = [layer.register_forward_hook(keep) for layer in layers]",
             ("tests/lens/test_probing.py",)),
    # the patch fingerprint
    Mutation("patch.fingerprint_without_dtype", "lensml/export/patch.py",
             'h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())', 'h.update(f"{name}|{tuple(t.shape)}|".encode())',
             ("tests/export/test_patch.py::test_the_fingerprint_tells_dtypes_apart",)),
    Mutation("patch.fingerprint_without_shape", "lensml/export/patch.py",
             'h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())', 'h.update(f"{name}|{t.dtype}|".encode())',
             ("tests/export/test_patch.py::test_the_fingerprint_tells_dtypes_apart",)),
    # multiple-choice scoring
    Mutation("scoring.acc_norm_per_token", "lensml/evaluation/scoring.py",
             "chars = [s / max(len(c), 1) for s, c in zip(scores, choices)]",
             "chars = [s / max(len(tokenizer(c, add_special_tokens=False)['input_ids']), 1) "
             "for s, c in zip(scores, choices)]", SCORING),
    Mutation("scoring.ties_to_last", "lensml/evaluation/scoring.py",
             "key=lambda i: (values[i], -i))", "key=lambda i: (values[i], i))", SCORING),
    Mutation("scoring.continuation_shifted", "lensml/evaluation/scoring.py",
             "out[i] = logp[row, keep - c:].gather(-1, targets[:, None]).sum().item()",
             "out[i] = logp[row, keep - c - 1:-1].gather(-1, targets[:, None]).sum().item()", SCORING),
    # steering's strength choice
    Mutation("steer.fidelity_against_central", "lensml/methods/steer/measure.py",
             "right = [d == lang for d in self.ident.batch(answers)]",
             "right = [d == self.subspace.central for d in self.ident.batch(answers)]",
             ("tests/methods/steer/test_measure.py",)),
    Mutation("steer.fidelity_against_first_target", "lensml/methods/steer/measure.py",
             "right = [d == lang for d in self.ident.batch(answers)]",
             "right = [d == next(iter(self.base)) for d in self.ident.batch(answers)]",
             ("tests/methods/steer/test_measure.py",)),
    # GGUF export layout
    Mutation("gguf.gemma_norm_without_plus_one", "lensml/export/gguf.py",
             'return w + 1 if "norm.weight" in gguf_name else w', "return w",
             ("tests/export/test_gguf_layout.py",)),
]


def copy_tree(target: Path) -> None:
    shutil.copytree(ROOT, target, ignore=lambda _d, names: [n for n in names if n in SKIP], symlinks=True)


def run_tests(copy: Path, tests: list[str], timeout: int) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "TQDM_DISABLE": "1"}
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, "timed out", time.perf_counter() - t
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, lines[-1] if lines else "", time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test run (default: 300)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list or not chosen:
        for m in chosen or MUTATIONS:
            print(f"{m.name:42} {m.path}  ->  {' '.join(m.tests)}")
        return 0 if chosen else 2
    with tempfile.TemporaryDirectory(prefix="lensml-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(copy)
        check = subprocess.run([sys.executable, "-c", "import lensml; print(lensml.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True, check=False)
        if not check.stdout.strip().startswith(str(copy)):
            print(f"the copy's lensml is not the one imported ({check.stdout.strip()}): stopping", file=sys.stderr)
            return 2
        union = sorted({t for m in chosen for t in m.tests})
        rc, last, seconds = run_tests(copy, union, args.timeout * 2)
        print(f"baseline ({len(union)} test targets): {last} ({seconds:.0f}s)")
        if rc != 0:
            print("the selected tests fail without any mutation: fix them first", file=sys.stderr)
            return 2
        caught = 0
        for m in chosen:
            path = copy / m.path
            original = path.read_text(encoding="utf-8")
            if original.count(m.old) != 1:
                print(f"{m.name:42} NOT APPLIED: its text occurs {original.count(m.old)} times in {m.path}")
                continue
            path.write_text(original.replace(m.old, m.new), encoding="utf-8")
            try:
                rc, last, seconds = run_tests(copy, list(m.tests), args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            verdict = {0: "SURVIVED", 1: "caught"}.get(rc, f"error (exit {rc})")
            caught += rc == 1
            print(f"{m.name:42} {verdict:10} {seconds:5.0f}s  {last}")
        print(f"caught {caught}/{len(chosen)} mutations")
        return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
