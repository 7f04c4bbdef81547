"""Progress off a terminal (lensml.progress): a line every LOG_EVERY_S seconds for a bar that lasts, nothing for
one that ends sooner, a heartbeat for work without a bar, and transformers' bars made the same way."""

import io
import logging
import time

import pytest
import torch
from transformers.utils import logging as hf_logging

from lensml import progress
from lensml.progress import LoggedBar
from lensml.recipes.stages import library_bars
from lensml.training import TrainConfig, TrainResult, optimise


class FakeClock:
    """time for lensml.progress: each reading is `tick` seconds after the previous one."""

    def __init__(self, tick: float):
        self.now, self.tick = 1000.0, tick

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lensml.progress"]


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.INFO, logger="lensml")
    return caplog


def test_off_a_terminal_a_bar_is_a_line_every_ten_seconds(monkeypatch, info):
    monkeypatch.setattr(progress, "time", FakeClock(0.5))  # 0.5 s a step: a line every 20 steps
    bar = progress.progress(total=100, desc="training", leave=False)  # pytest's stderr is not a terminal
    assert isinstance(bar, LoggedBar)
    for i in range(100):
        bar.set_postfix(loss=f"{1 / (i + 1):.3g}")
        bar.update()
    bar.close()
    assert lines(info) == ["training: 20/100, 10 s, ~40 s left, loss=0.05",
                           "training: 40/100, 20 s, ~30 s left, loss=0.025",
                           "training: 60/100, 30 s, ~20 s left, loss=0.0167",
                           "training: 80/100, 40 s, ~10 s left, loss=0.0125",
                           "training: 100/100, 50 s, loss=0.01"]  # no second line for the same count at close


def test_a_bar_that_ends_sooner_says_nothing(monkeypatch, info):
    monkeypatch.setattr(progress, "time", FakeClock(1.0))
    for _ in progress.progress(range(8), desc="quick"):  # 8 s in all
        pass
    assert lines(info) == []


def test_a_bar_without_total_counts_and_says_where_it_ended(monkeypatch, info):
    monkeypatch.setattr(progress, "time", FakeClock(3.0))
    bar = progress.progress(desc="reading instruction data", unit=" rows")
    for _ in range(5):
        bar.update(1000)
    bar.update(7)
    bar.close()
    assert lines(info) == ["reading instruction data: 4000 rows, 12 s",
                           "reading instruction data: 5007 rows, 21 s, done"]


def test_long_waits_read_in_minutes(monkeypatch, info):
    monkeypatch.setattr(progress, "time", FakeClock(125.0))
    for _ in progress.progress(range(3), desc="probe en"):
        pass
    assert lines(info)[0] == "probe en: 1/3, 2 min 05 s, ~4 min 10 s left"
    assert lines(info)[-1] == "probe en: 3/3, 6 min 15 s"  # said at the last step: not again at the end


def test_on_a_terminal_it_is_tqdm_and_with_tqdm_disable_nothing(monkeypatch, info):
    monkeypatch.setattr(progress, "time", FakeClock(100.0))
    bar = progress.progress(total=3, desc="training", file=Terminal())
    assert not isinstance(bar, LoggedBar) and not bar.disable
    bar.close()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    for _ in progress.progress(range(3), desc="silent"):
        pass
    assert lines(info) == []


def test_a_slow_training_loop_off_a_terminal_logs_its_progress(monkeypatch, info):
    """The job's loop (lensml.training.optimise) with a fake clock of 4 s a reading: the bar's lines carry the
    count, the time, the estimate and the loss, every 10 s."""
    monkeypatch.setattr(progress, "time", FakeClock(4.0))
    w = torch.nn.Parameter(torch.ones(3))

    def micro_step(idx, weight):
        loss = (w ** 2).sum()
        if weight is not None:
            (loss * weight).backward()
        return {"loss": loss.item()}

    result = optimise([w], 12, TrainConfig(lr=1e-2, batch_size=1), micro_step, TrainResult("t", 0, 1e-2),
                      ("loss",), "cpu")
    assert result.steps == 12
    shown = lines(info)
    assert shown[0].startswith("training: 3/12, 12 s, ~36 s left, loss=")
    assert [s.split(",")[0] for s in shown] == ["training: 3/12", "training: 6/12", "training: 9/12",
                                                "training: 12/12"]
    assert shown[-1].endswith(f"loss={result.history[-1]['loss']:.4g}")


def test_heartbeat_speaks_for_work_without_a_bar(monkeypatch, info):
    monkeypatch.setattr(progress, "_last_line", [0.0])  # no bar has spoken
    with progress.heartbeat("eval_enhanced", every=0.05):
        time.sleep(0.4)
    beats = [s for s in lines(info) if s.startswith("eval_enhanced: running, ")]
    assert beats
    info.clear()
    progress._last_line[0] = 0.0  # long ago
    with progress.heartbeat("save", every=0.4):  # looks every 0.1 s, ends before 0.4 s: nothing
        time.sleep(0.25)
    assert lines(info) == []
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)  # a terminal: today's behaviour
    with progress.heartbeat("eval_enhanced", every=0.05):
        time.sleep(0.2)
    assert lines(info) == []


def test_transformers_bars_follow_the_same_rule(monkeypatch, info):
    """transformers prints its loading bars to a pipe as carriage-return bars; in a job they are lensml's."""
    monkeypatch.setattr(progress, "time", FakeClock(6.0))
    outside = hf_logging.tqdm(range(3), desc="Loading weights", file=io.StringIO())
    assert not isinstance(outside, LoggedBar)
    outside.close()
    with library_bars():
        inside = hf_logging.tqdm(range(4), desc="Loading weights")
        assert isinstance(inside, LoggedBar)
        assert list(inside) == [0, 1, 2, 3]
        hf_logging.disable_progress_bar()  # turned off by the user: stays off
        try:
            assert not isinstance(hf_logging.tqdm(range(2)), LoggedBar)
        finally:
            hf_logging.enable_progress_bar()
    assert lines(info)[0] == "Loading weights: 2/4, 12 s, ~12 s left"
    after = hf_logging.tqdm(range(1), file=io.StringIO())
    assert not isinstance(after, LoggedBar)  # the hook is gone with the job
    after.close()
