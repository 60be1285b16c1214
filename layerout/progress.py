"""What a long command says while it works: counts, an estimate of the time left, a status line
or a progress bar, and a note when a step is slow. Plain Python (no Ray, no torch), every clock
injectable, so the counting is tested with a fake clock and the same pieces serve a search
(``tuning.progress.TrialProgress`` feeds them Ray Tune's trial events), a single training run
(``layerout.trainer``) and any other command that trains several runs one after the other.

``JobProgress``: a job of ``runs`` runs of ``epochs`` epochs each, fed events::

    job = JobProgress(runs=24, epochs=10, noun="trials")   # clock=time.monotonic by default
    job.started("a")                 # run "a" is training (job.started("a", epochs=5): its own budget)
    job.trained("a", 3)              # run "a" has trained 3 epochs in all
    job.ended("a")                   # it ended: full budget, stopped early (fewer epochs) or failed=True
    job.restored("b", 4, ended=False)  # trained before this process started (a resumed job): counted
                                       # as done, not in the rate the estimate uses
    job.repeated()                   # a proposal not trained (it repeats a run already made)
    st = job.status()                # Status: finished / stopped / failed / running / queued, epochs
                                     # done / planned, elapsed_s, left_s
    job.line()                       # "3/24 trials finished (1 stopped early), 4 running, 17 queued; ..."

The plan counts the epochs of ended runs as they ended (a run stopped early plans no more) and the
whole budget of every running and queued run. The estimate of the time left is the epochs still
planned at the rate epochs were trained since the first run started in this process (None until
one was): an early-stopping job usually ends sooner than it says.

``StatusDisplay(job, interval)``: shows a job while it runs. ``tick()`` (call it often) draws
every ``interval`` seconds: on a terminal a tqdm bar of epochs trained of planned with the status
next to it, elsewhere (a log file) one status line. ``write(line)`` prints a line above the bar;
``close()`` ends it (off a terminal with a last status line). ``interval`` None: ``default_interval``
(5 s on a terminal, 60 s otherwise); 0: no status at all.

``say(line)``: print a line on stdout without breaking a progress bar on the terminal.

``slow_notice(what)``: a context manager that says ``what ...`` if the work inside it is still
running after a second (a timer thread), and how long it took when it ends; silent for fast work.

``step_bar(total, desc)``: a progress bar over the steps of a long epoch on a terminal (shown only
after a second, cleared when done), or None.
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator


from layerout.checks import short
from layerout.errors import UserError

Clock = Callable[[], float]
TERMINAL_INTERVAL_S = 5.0  # how often the status is redrawn on a terminal
LOG_INTERVAL_S = 60.0  # how often a status line is written when stdout is a file or a pipe
SLOW_S = 1.0  # slow_notice: say what is going on after this long


def format_seconds(seconds: float | None) -> str:
    """``45s``, ``2m05s``, ``3h07m``; ``?`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def check_interval(value: Any, flag: str = "--progress-interval") -> None:
    """A status interval is None (the default) or a finite number of seconds >= 0; one UserError otherwise."""
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value) and value >= 0):
        raise UserError(f"{flag}: must be a number of seconds >= 0 (0: no status), got {short(value)}")


def default_interval(stream: Any = None) -> float:
    """Seconds between status updates: a few on a terminal, a minute in a log file."""
    return TERMINAL_INTERVAL_S if is_terminal(sys.stdout if stream is None else stream) else LOG_INTERVAL_S


@dataclass(frozen=True)
class Status:
    """A job at one moment. ``finished`` counts every ended run, ``stopped`` (ended short of its
    budget) and ``failed`` among them; ``queued`` the runs not started yet (or waiting to resume)."""

    runs: int
    finished: int
    stopped: int
    failed: int
    running: int
    queued: int
    repeats: int
    epochs_done: int
    epochs_planned: int
    elapsed_s: float
    left_s: float | None


@dataclass
class _Run:
    epochs: int  # trained in all
    budget: int
    state: str  # queued (seen, waiting), running, ended
    stopped: bool = False
    failed: bool = False


class JobProgress:
    """Counts and time estimate of a job of ``runs`` runs of ``epochs`` epochs (see the module
    docstring). ``noun`` names the runs in ``line()``."""

    def __init__(self, runs: int, epochs: int, *, clock: Clock = time.monotonic, noun: str = "runs") -> None:
        self.runs, self.epochs, self.noun = int(runs), int(epochs), noun
        self.clock = clock
        self._t0 = clock()
        self._rate_t0: float | None = None  # first start in this process: the rate is measured from here
        self._new_epochs = 0  # epochs trained in this process
        self._runs: dict[str, _Run] = {}
        self.repeats = 0

    def __contains__(self, run: str) -> bool:
        return run in self._runs

    def _run(self, run: str) -> _Run:
        if run not in self._runs:
            self._runs[run] = _Run(epochs=0, budget=self.epochs, state="queued")
        return self._runs[run]

    # ------------------------------------------------------------------ events
    def queued(self, run: str, epochs: int | None = None) -> None:
        """Run ``run`` waits to train ``epochs`` epochs (its budget if not the job's)."""
        r = self._run(run)
        if epochs is not None:
            r.budget = int(epochs)

    def started(self, run: str, epochs: int | None = None) -> None:
        """Run ``run`` is training (again, after a restart); ``epochs``: its budget if not the job's."""
        r = self._run(run)
        if epochs is not None:
            r.budget = int(epochs)
        r.state = "running"
        if self._rate_t0 is None:
            self._rate_t0 = self.clock()

    def trained(self, run: str, epochs: int) -> None:
        """Run ``run`` has trained ``epochs`` epochs in all (its latest reported epoch)."""
        r = self._run(run)
        if r.state == "queued":
            self.started(run)
        epochs = int(epochs)
        if epochs > r.epochs:
            self._new_epochs += epochs - r.epochs
            r.epochs = epochs

    def ended(self, run: str, epochs: int | None = None, failed: bool = False) -> None:
        """Run ``run`` ended after ``epochs`` epochs (default: those it reported): the whole
        budget, fewer (stopped early), or ``failed``."""
        if epochs is not None:
            self.trained(run, epochs)
        r = self._run(run)
        r.state, r.failed = "ended", bool(failed)
        r.stopped = not failed and r.epochs < r.budget

    def restored(self, run: str, epochs: int, ended: bool, failed: bool = False, budget: int | None = None) -> None:
        """A run as a resumed job finds it: ``epochs`` trained before this process started
        (counted as done, not in the rate); ``ended``, or waiting to continue; ``budget``: its
        budget if not the job's."""
        r = self._run(run)
        if budget is not None:
            r.budget = int(budget)
        r.epochs = max(r.epochs, int(epochs))
        if ended:
            r.state, r.failed = "ended", bool(failed)
            r.stopped = not failed and r.epochs < r.budget

    def forget(self, run: str) -> None:
        """Run ``run`` ended before it trained or reported anything (the job was stopped): counted
        as never started."""
        self._runs.pop(run, None)

    def repeated(self, count: int = 1) -> None:
        """``count`` proposals were not trained: each repeats a run already made."""
        self.repeats += int(count)

    # ------------------------------------------------------------------ the state
    def status(self) -> Status:
        now = self.clock()
        runs = list(self._runs.values())
        ended = [r for r in runs if r.state == "ended"]
        running = sum(r.state == "running" for r in runs)
        queued = max(0, self.runs - len(ended) - running)
        unseen = max(0, self.runs - len(runs))  # not created yet: the job's budget each
        done = sum(r.epochs for r in runs)
        planned = (sum(r.epochs for r in ended) + sum(max(r.budget, r.epochs) for r in runs if r.state != "ended")
                   + unseen * self.epochs)
        left: float | None = None
        if planned <= done:
            left = 0.0
        elif self._new_epochs and self._rate_t0 is not None and now > self._rate_t0:
            left = (planned - done) * (now - self._rate_t0) / self._new_epochs
        return Status(runs=self.runs, finished=len(ended), stopped=sum(r.stopped for r in ended),
                      failed=sum(r.failed for r in ended), running=running, queued=queued, repeats=self.repeats,
                      epochs_done=done, epochs_planned=planned, elapsed_s=now - self._t0, left_s=left)

    def counts_text(self, st: Status | None = None) -> str:
        """``3/24 trials finished (1 stopped early), 4 running, 17 queued``."""
        st = st or self.status()
        notes = [f"{st.stopped} stopped early"] * bool(st.stopped) + [f"{st.failed} failed"] * bool(st.failed)
        text = (f"{st.finished}/{st.runs} {self.noun} finished" + (f" ({', '.join(notes)})" if notes else "")
                + f", {st.running} running, {st.queued} queued")
        if st.repeats:
            text += f", {st.repeats} repeated proposal{'s' * (st.repeats != 1)} not trained"
        return text

    def time_text(self, st: Status | None = None) -> str:
        """``2m05s elapsed, about 12m30s left``."""
        st = st or self.status()
        if st.left_s is None:
            left = "time left known after the first epoch"
        elif st.left_s <= 0:
            left = "nothing left to train"
        else:
            left = f"about {format_seconds(st.left_s)} left"
        return f"{format_seconds(st.elapsed_s)} elapsed, {left}"

    def line(self) -> str:
        """The status in one line: runs, epochs, time."""
        st = self.status()
        return (f"{self.counts_text(st)}; epochs {st.epochs_done}/{st.epochs_planned} planned; "
                f"{self.time_text(st)}")


class StatusDisplay:
    """Shows a ``JobProgress`` every ``interval`` seconds while the job runs: a tqdm bar on a
    terminal (``bar`` None: when ``stream`` is one), else a status line. See the module docstring."""

    BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs{postfix}"

    def __init__(self, job: JobProgress, interval: float | None = None, *, stream: IO[str] | None = None,
                 bar: bool | None = None, label: str = "status") -> None:
        self.job = job
        self.stream = stream
        self.interval = default_interval(self._out) if interval is None else float(interval)
        self.use_bar = (is_terminal(self._out) if bar is None else bool(bar)) and self.interval > 0
        self.label = label
        self._last = job.clock()
        self._bar: Any = None
        self._last_line = ""
        self._lock = threading.Lock()
        self.closed = False

    @property
    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout  # looked up late: tests capture stdout

    def tick(self, force: bool = False) -> None:
        """Draw the status if ``interval`` seconds passed since it was last drawn (or ``force``)."""
        if self.closed or self.interval <= 0:
            return
        now = self.job.clock()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.use_bar:
            self._draw_bar()
        else:
            self._status_line()

    def write(self, line: str) -> None:
        """A line of its own (a trial ended, ...), above the bar on a terminal."""
        if self._bar is not None:
            _tqdm().write(line, file=self._out)
        else:
            self._line(line)

    def close(self) -> None:
        """The job ended: the bar stays as it ends; off a terminal, a last status line."""
        if self.closed:
            return
        if self.interval > 0:
            if self.use_bar:
                self._draw_bar()
            else:
                self._status_line(again=False)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.closed = True

    def _status_line(self, again: bool = True) -> None:
        line = f"[{self.label}] {self.job.line()}"
        if again or line != self._last_line:  # the last line of a job that just printed it: once
            self._line(line)
            self._last_line = line

    def _line(self, line: str) -> None:
        with self._lock:
            print(line, file=self._out, flush=True)

    def _draw_bar(self) -> None:
        st = self.job.status()
        text = f"{self.job.counts_text(st)}; {self.job.time_text(st)}"
        if self._bar is None:
            self._bar = _tqdm()(total=st.epochs_planned, file=self._out, bar_format=self.BAR_FORMAT, postfix=text,
                                 dynamic_ncols=True, desc=f"{self.label}: ", mininterval=0, leave=True)
        self._bar.total = max(st.epochs_planned, st.epochs_done)
        self._bar.n = st.epochs_done
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.refresh()


def say(line: str) -> None:
    """Print ``line`` on stdout; a progress bar on the terminal is redrawn below it."""
    _tqdm().write(line, file=sys.stdout)
    sys.stdout.flush()


@contextlib.contextmanager
def slow_notice(what: str, after: float = SLOW_S, say: Callable[[str], None] | None = say,
                clock: Clock = time.monotonic) -> Iterator[None]:
    """Say ``what ...`` if the work inside is still running after ``after`` seconds, and
    ``what: done in 3.2s`` when it ends (nothing if it was faster, nor if it raised). ``say`` None:
    silent (the quiet trials of a search)."""
    if say is None:
        yield
        return
    done = threading.Event()
    said: list[bool] = []
    t0 = clock()

    def watch() -> None:
        if not done.wait(after):
            said.append(True)
            say(f"{what} ...")

    watcher = threading.Thread(target=watch, name="slow-notice", daemon=True)
    watcher.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        watcher.join()
        if said and ok:
            took = clock() - t0
            say(f"{what}: done in {took:.1f}s" if took < 60 else f"{what}: done in {format_seconds(took)}")


def step_bar(total: int, desc: str, enabled: bool, stream: IO[str] | None = None) -> Any:
    """A tqdm bar over ``total`` steps on a terminal when ``enabled``, drawn only once a second has
    passed (short epochs show none) and cleared at the end; None otherwise."""
    out = stream if stream is not None else sys.stdout
    if not enabled or not is_terminal(out):
        return None
    return _tqdm()(total=total, desc=desc, unit="step", file=out, leave=False, delay=SLOW_S, mininterval=0.5,
                dynamic_ncols=True)


def _tqdm() -> Any:
    """tqdm's bar class, imported when a bar or a line is first drawn: the command lines import this
    module for its checks, and importing tqdm costs a noticeable part of a --help."""
    from tqdm import tqdm

    return tqdm
