"""`wrote OUT` once: the command prints it as its last line; the library's log of it stays off the console."""

import subprocess
import sys

from lensml.cli import not_printed_here


def test_a_probe_says_wrote_once(tiny_llama, parallel_data, tmp_path):
    out = tmp_path / "probe"
    done = subprocess.run([sys.executable, "-m", "lensml.cli", "probe", "--model", str(tiny_llama), "--probe-data",
                           str(parallel_data), "--langs", "zh,sw", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert both.count(f"wrote {out}") == 1 and done.stdout.strip().endswith(f"wrote {out}")
    assert "INFO lensml" in done.stderr  # the other log lines still show


def test_only_the_librarys_wrote_line_is_filtered():
    import logging

    def record(name, msg):
        return logging.LogRecord(name, logging.INFO, __file__, 1, msg, ("runs/x",), None)

    assert not not_printed_here(record("lensml.recipes.run", "wrote %s"))
    assert not_printed_here(record("lensml.recipes.run", "probing %s"))
    assert not_printed_here(record("transformers", "wrote %s"))
