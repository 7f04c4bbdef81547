"""Atomic outputs: umask, NaN-free JSON, stale temporary folders, SIGTERM cleanup."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lensml.errors import LensError
from lensml.io import dumps, staged_dir, write_json_atomic


def test_json_never_holds_nan(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"nll": float("nan"), "xs": [1.0, float("inf")], "ok": 0.5})
    assert json.loads(path.read_text()) == {"nll": None, "xs": [1.0, None], "ok": 0.5}
    assert "NaN" not in dumps({"a": float("-inf")})


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "f.json", {})
        with staged_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_staged_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as tmp:
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_dir(out, overwrite=True) as tmp:
            (tmp / "a").write_text("second")
            raise RuntimeError("boom")
    assert (out / "a").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(LensError, match="--overwrite"):
        with staged_dir(out):
            pass


def test_stale_temporary_folders_of_dead_runs_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-abcd"
    stale.mkdir()
    (stale / "weights").write_bytes(b"0" * 1000)
    live = tmp_path / f".out.tmp-{os.getpid()}-efgh"  # a run in progress (this process) is left alone
    live.mkdir()
    with staged_dir(tmp_path / "out"):
        pass
    assert not stale.exists() and live.exists()


def test_sigterm_cleans_up_and_exits_143(tiny_llama, parallel_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lensml.cli", "run", "--model", str(tiny_llama), "--probe-data", str(parallel_data),
           "--train-data", str(parallel_data), "--langs", "zh", "--eval.no-enabled", "--epochs", "5000",
           "--lr", "1e-4", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".run.partial/losses.jsonl")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".run.partial/losses.jsonl")), "training never started"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated" in err.splitlines()[-1]
    # OUT is not written; the finished probe is kept beside it for --resume (lensml.recipes.resume), nothing else.
    assert not out.exists() and [p.name for p in tmp_path.glob(".run*")] == [".run.partial"]
    assert list(json.loads((tmp_path / ".run.partial" / "progress.json").read_text())["finished"]) == ["probe"]
