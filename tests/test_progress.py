"""layerout/progress.py: the counts, plan and time estimate of a long job from a fake clock and fake
run events; the status display's interval; the slow-work notice. No Ray, no torch, no sleeping."""
from __future__ import annotations

import io
import threading

import pytest

from layerout.progress import (JobProgress, StatusDisplay, default_interval, format_seconds, slow_notice,
                               step_bar)


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_counts_plan_and_estimate_follow_the_events():
    clock = Clock()
    job = JobProgress(runs=4, epochs=10, clock=clock, noun="trials")
    st = job.status()
    assert (st.finished, st.running, st.queued, st.epochs_done, st.epochs_planned, st.left_s) == (0, 0, 4, 0, 40, None)
    clock.t += 5  # starting up (Ray, the data): not in the rate
    job.started("a")
    job.started("b")
    clock.t += 10
    assert job.status().left_s is None  # no epoch yet: no rate
    job.trained("a", 1)
    job.trained("b", 1)
    st = job.status()
    assert (st.running, st.queued, st.epochs_done, st.epochs_planned) == (2, 2, 2, 40)
    assert st.left_s == pytest.approx(38 * 10 / 2)  # 2 epochs in 10 s since the first start
    assert st.elapsed_s == pytest.approx(15)
    clock.t += 10
    job.trained("a", 2)
    job.trained("b", 2)
    job.ended("b")  # stopped early at epoch 2: it plans no more epochs
    st = job.status()
    assert (st.finished, st.stopped, st.running, st.queued) == (1, 1, 1, 2)
    assert (st.epochs_done, st.epochs_planned) == (4, 2 + 10 + 2 * 10)
    assert st.left_s == pytest.approx((32 - 4) * 20 / 4)
    job.repeated(3)  # proposals not trained: they change neither the runs nor the epochs
    job.started("c")
    job.ended("c", epochs=0, failed=True)
    st = job.status()
    assert (st.finished, st.stopped, st.failed, st.running, st.queued, st.repeats) == (2, 1, 1, 1, 1, 3)
    assert st.epochs_planned == 2 + 0 + 10 + 10
    assert job.line() == ("2/4 trials finished (1 stopped early, 1 failed), 1 running, 1 queued, 3 repeated proposals "
                          "not trained; epochs 4/22 planned; 25s elapsed, about 1m30s left")
    job.trained("a", 10)
    job.ended("a")
    job.started("d")
    job.ended("d", epochs=10)
    st = job.status()
    assert (st.finished, st.running, st.queued, st.epochs_done, st.epochs_planned, st.left_s) == (4, 0, 0, 22, 22, 0.0)
    assert job.time_text().endswith("nothing left to train")


def test_a_resumed_job_counts_earlier_epochs_as_done_but_not_in_its_rate():
    clock = Clock()
    job = JobProgress(runs=3, epochs=4, clock=clock)
    job.restored("a", 4, ended=True)
    job.restored("b", 2, ended=False)  # waiting to continue from its checkpoint
    st = job.status()
    assert (st.finished, st.running, st.queued, st.epochs_done, st.epochs_planned) == (1, 0, 2, 6, 12)
    job.started("b")
    clock.t += 30
    job.trained("b", 3)  # one epoch in this process, 30 s
    st = job.status()
    assert st.epochs_done == 7 and st.left_s == pytest.approx((12 - 7) * 30)
    job.restored("c", 0, ended=True, failed=True)
    assert job.status().failed == 1 and job.status().epochs_planned == 4 + 4 + 0


def test_a_run_with_its_own_budget():
    job = JobProgress(runs=2, epochs=10, clock=Clock())
    job.started("short", epochs=3)
    job.ended("short", epochs=3)
    st = job.status()
    assert st.stopped == 0 and st.epochs_planned == 13 and st.queued == 1


def test_status_lines_come_at_the_interval_and_a_last_one_at_the_end():
    clock = Clock()
    job = JobProgress(runs=2, epochs=3, clock=clock, noun="trials")
    out = io.StringIO()
    shown = StatusDisplay(job, interval=30, stream=out, label="search")
    assert not shown.use_bar  # not a terminal: lines
    job.started("a")
    for _ in range(29):
        clock.t += 1
        shown.tick()
    assert out.getvalue() == ""
    clock.t += 1
    job.trained("a", 1)
    shown.tick()
    shown.tick()  # drawn just now: not again
    shown.write("[1/2] trial a ...")
    assert out.getvalue().splitlines() == [
        "[search] 0/2 trials finished, 1 running, 1 queued; epochs 1/6 planned; 30s elapsed, about 2m30s left",
        "[1/2] trial a ..."]
    clock.t += 30
    shown.tick()
    assert len(out.getvalue().splitlines()) == 3
    job.ended("a", 3)
    shown.close()
    shown.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("[search] 1/2 trials finished, 0 running, 1 queued; epochs 3/6")
    # a job that ends just after a status line: the same line is not written twice
    again = io.StringIO()
    shown = StatusDisplay(job, interval=30, stream=again)
    clock.t += 30
    shown.tick()
    shown.close()
    assert len(again.getvalue().splitlines()) == 1


def test_interval_zero_shows_no_status_and_defaults_depend_on_the_terminal():
    clock = Clock()
    job = JobProgress(runs=1, epochs=1, clock=clock)
    out = Tty()
    shown = StatusDisplay(job, interval=0, stream=out)
    clock.t += 1000
    shown.tick()
    shown.write("a line")
    shown.close()
    assert out.getvalue() == "a line\n"
    assert default_interval(Tty()) == 5.0 and default_interval(io.StringIO()) == 60.0
    assert StatusDisplay(job, stream=io.StringIO()).interval == 60.0


def test_on_a_terminal_the_status_is_a_bar():
    clock = Clock()
    job = JobProgress(runs=2, epochs=5, clock=clock, noun="trials")
    out = Tty()
    shown = StatusDisplay(job, stream=out, label="search")
    assert shown.use_bar and shown.interval == 5.0
    job.started("a")
    clock.t += 5
    job.trained("a", 2)
    shown.tick()
    shown.write("[1/2] trial a ended")
    shown.close()
    text = out.getvalue()
    assert "search:  20%|" in text and "2/10 epochs, 0/2 trials finished, 1 running, 1 queued" in text
    assert "[1/2] trial a ended\n" in text


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 44.6, 125, 3600 * 3 + 7 * 60 + 5, None)] == ["0s", "45s", "2m05s",
                                                                                       "3h07m", "?"]


def test_slow_notice_says_what_runs_only_when_it_is_slow():
    lines: list[str] = []
    said = threading.Event()

    def record(line: str) -> None:
        lines.append(line)
        said.set()

    clock = Clock()
    with slow_notice("loading cifar10", after=0.0, say=record, clock=clock):
        assert said.wait(10)  # still inside: the notice came while the work ran
        clock.t += 2.5
    assert lines == ["loading cifar10 ...", "loading cifar10: done in 2.5s"]

    lines.clear()
    with slow_notice("loading digits", after=1000.0, say=record):
        pass  # fast: nothing said
    assert lines == []

    said.clear()
    with pytest.raises(RuntimeError):
        with slow_notice("capturing", after=0.0, say=record):
            assert said.wait(10)
            raise RuntimeError("boom")
    assert lines == ["capturing ..."]  # no "done" for work that failed

    with slow_notice("quiet", after=0.0, say=None):
        pass


def test_step_bar_only_on_a_terminal():
    assert step_bar(10, "epoch 1/3", enabled=True, stream=io.StringIO()) is None
    assert step_bar(10, "epoch 1/3", enabled=False, stream=Tty()) is None
    bar = step_bar(10, "epoch 1/3", enabled=True, stream=Tty())
    assert bar is not None and bar.total == 10
    bar.close()
