"""Progress bars: one helper so that every bar behaves the same, on a terminal and off it.

On a terminal (or in a notebook) a bar is tqdm's. Off a terminal, when stderr is a file or a pipe
(a log, CI, `nohup`), tqdm would write thousands of carriage-return lines or, hidden, nothing for
minutes; there a bar becomes a log line every LOG_EVERY_S seconds instead ("training: 40/100, 12 s,
~18 s left, loss=1.2"), and says nothing at all when it ends sooner: the stage lines around it say
when it started and how long it took. Under data parallelism only the main process reports.
TQDM_DISABLE=1 turns bars and lines off everywhere (tqdm's own variable).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Iterator

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as chosen_tqdm
from tqdm.std import tqdm as std_tqdm

from lensml import distributed

log = logging.getLogger(__name__)

#: Off a terminal, a bar logs where it is at most this often (seconds), and not at all if it ends sooner.
LOG_EVERY_S = 10.0
_last_line = [0.0]  # time.monotonic() of the last progress line written, by a bar or a heartbeat


def progress(*args, **kwargs):
    """tqdm on a terminal; off one, a LoggedBar (a line every LOG_EVERY_S); hidden on non-main processes."""
    if silenced():
        kwargs["disable"] = True
    if kwargs.get("disable") or on_terminal(kwargs.get("file")):
        return tqdm(*args, **kwargs)
    return LoggedBar(*args, **kwargs)


def silenced() -> bool:
    """No progress at all from this process: a non-main data-parallel process, or TQDM_DISABLE=1 (tqdm's own)."""
    return ((distributed.is_distributed() and not distributed.is_main())
            or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"))


def on_terminal(stream=None) -> bool:
    """Does a bar written to stream (default stderr) show as a bar: a terminal, or a notebook's widget."""
    if chosen_tqdm is not std_tqdm:  # tqdm.auto chose a notebook's bar, which shows without a terminal
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    minutes, sec = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class LoggedBar:
    """A progress bar off a terminal: tqdm's calls (update, set_postfix, iteration, with), reported as log lines.

    The first line comes LOG_EVERY_S seconds after the bar starts and then at most one per LOG_EVERY_S;
    a bar that logged anything logs one more line when it closes (unless its last line said the same),
    so the log shows where it ended.
    """

    def __init__(self, iterable=None, desc: str | None = None, total: float | None = None, leave: bool = True,
                 file=None, unit: str = "it", initial: float = 0, **_display_options):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self.desc = desc or ""
        self.total = total
        self.n = initial
        self.unit = unit
        self.postfix = ""
        self.disable = False
        self._start = self._last = time.monotonic()
        self._logged_n: float | None = None  # the count of the last line written, None before the first
        self._closed = False

    # What callers of tqdm use.
    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S:
            self._last = _last_line[0] = now
            self._logged_n = self.n
            log.info("%s", self.line(now))

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    set_description_str = set_description

    def reset(self, total: float | None = None) -> None:
        self.n = 0
        if total is not None:
            self.total = total
        self._start = self._last = time.monotonic()

    def refresh(self, *args, **kwargs) -> None:
        """Nothing to redraw: lines are written as the bar moves."""

    def clear(self, *args, **kwargs) -> None:
        """Nothing to clear: a written line stays."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._logged_n is not None and self._logged_n != self.n:
            _last_line[0] = now = time.monotonic()
            log.info("%s", self.line(now, ending=True))

    def line(self, now: float, ending: bool = False) -> str:
        """'training: 40/100, 12 s, ~18 s left, loss=1.2' (no estimate without a total, or at the end)."""
        elapsed = now - self._start
        unit = "" if self.unit == "it" else self.unit
        count = f"{_count(self.n)}/{_count(self.total)}{unit}" if self.total else f"{_count(self.n)}{unit}"
        parts = [count, _seconds(elapsed)]
        if self.total and self.n and not ending and self.n < self.total:
            parts.append(f"~{_seconds(elapsed / self.n * (self.total - self.n))} left")
        if ending:
            parts.append("done")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc + ': ' if self.desc else ''}{', '.join(parts)}"


@contextlib.contextmanager
def heartbeat(desc: str, every: float | None = None) -> Iterator[None]:
    """Off a terminal, a line every LOG_EVERY_S seconds while the block runs ("eval_enhanced: running, 40 s"),
    when no bar has written one meanwhile: work without a bar of its own (generation, saving) is not silent
    for minutes in a log. Nothing on a terminal, on non-main processes, or with TQDM_DISABLE=1."""
    if on_terminal() or silenced():
        yield
        return
    every = every if every is not None else LOG_EVERY_S
    start = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every / 4):  # so that the silence between two lines is at most 1.25 * every
            now = time.monotonic()
            if now - max(_last_line[0], start) >= every:  # a stage that ends sooner says nothing
                _last_line[0] = now
                log.info("%s: running, %s", desc, _seconds(now - start))

    thread = threading.Thread(target=beat, name=f"lensml-heartbeat-{desc}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
