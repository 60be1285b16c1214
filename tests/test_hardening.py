"""Adversarial input and hostile conditions, second round: each case a user (or a crash, a full
disk, another user) met, one test each. Bad input is one ``error:`` line on stderr, exit 2, and
nothing stored is changed; searches here are small real ones on digits, on a local Ray on loopback.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

from helpers import REPO, assert_one_line_error, good_policy, kill_group, run_module  # noqa: E402
from layerout.errors import UserError  # noqa: E402
from layerout.policy import MAX_POLICY_BYTES, Policy, load_policy  # noqa: E402


def _tune_main(args, cwd: Path, timeout: float = 240, **kw):
    return run_module("tune_main", args, timeout=timeout, cwd=cwd, **kw)


# ------------------------------------------------------------------------------ 7: names
def test_a_long_or_nul_name_is_one_line_with_the_rule(tmp_path):
    """A 5,000-character --name was an OSError traceback (file name too long), a NUL in a space's
    name an ArrowInvalid one: both are one line saying the allowed length and characters."""
    import tune_main

    space = tmp_path / "nul.yaml"
    space.write_text('name: "a\\0b"\nmodel: digits_cnn\ndataset: digits\n')
    long_name = "x" * 5000
    long_space = tmp_path / "long.yaml"
    long_space.write_text(f"name: {long_name}\nmodel: digits_cnn\ndataset: digits\n")
    flag = _tune_main(["--preset", "demo", "--storage", tmp_path / "res", "--name", long_name], tmp_path)
    line = assert_one_line_error(flag, "error: --name: must be 1 to 100 characters: letters, digits and . _ - +, "
                                       "starting with a letter or digit, got 'xxx", "(5,000 characters)")
    assert len(line) < 300
    rule = "name: must be 1 to 100 characters: letters, digits and . _ - +, starting with a letter or digit"
    with pytest.raises(UserError, match=re.escape(f"{space}: {rule}, got 'a\\x00b'")):
        tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res")])
    with pytest.raises(UserError, match=re.escape(f"{long_space}: {rule}, got 'xxx") + r".*\(5,000 characters\)$"):
        tune_main.main(["--space", str(long_space), "--storage", str(tmp_path / "res")])
    assert not (tmp_path / "res").exists()


# ------------------------------------------------------------------------------ 8: policy files
def _policy_file(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_policy_files_past_the_limits_are_one_line(tmp_path):
    """Nested 100,000 deep (a RecursionError), a 100,000-digit integer (a ValueError), a file over
    the size limit, a seed no generator takes: one line naming the file, before any training."""
    cases = {
        "deep": ("[" * 100_000, "nested too deeply to read"),
        "digits": ('{"format": "layerout-policy", "version": ' + "9" * 100_000 + "}",
                   "a number has more than 4,300 digits"),
        "big": (json.dumps({**good_policy(), "units": [f"unit{i}" for i in range(150_000)]}),
                f"bytes; a policy file may be at most {MAX_POLICY_BYTES:,} bytes (1 MiB)"),
        "seed": (json.dumps(good_policy(seed=10**400)),
                 "schedule.seed: must be an integer within [0, 2147483647] or null, got 1000000"),
        "negative_seed": (json.dumps(good_policy(seed=-1)), "schedule.seed: must be an integer within [0, 2147483647]"),
        "provenance_seed": (json.dumps({**good_policy(), "provenance": {"dataset": "digits", "epochs": 4,
                                                                         "seed": 2**63}}),
                            "provenance.seed: must be an integer within [0, 2147483647]"),
    }
    for name, (text, needle) in cases.items():
        path = _policy_file(tmp_path, f"{name}.json", text)
        with pytest.raises(UserError) as exc:
            load_policy(path)
        msg = str(exc.value)
        assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg and len(msg) < 300, (name, msg)
    # the command line: one line, exit 2
    out = run_module("layerout.train", ["--policy", tmp_path / "deep.json", "--dataset", "digits",
                                        "--out", tmp_path / "run"], timeout=120)
    assert_one_line_error(out, f"error: {tmp_path / 'deep.json'}: nested too deeply to read")
    assert not (tmp_path / "run").exists()


class _CountingName(str):
    """A unit name that counts the comparisons made with it (hashing is not counted)."""

    compared = 0

    def __eq__(self, other):
        type(self).compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_duplicate_unit_check_is_linear():
    """The duplicate check compared every unit with every other (20,000 units took 8 s, a million
    ran past ten minutes); it now looks each name up once: at most a few comparisons per unit."""
    n = 2_000
    units = [_CountingName(f"unit{i}") for i in range(n)]
    _CountingName.compared = 0
    with pytest.raises(UserError, match="schedule.v: has 3 values but the model has 2000 units"):
        Policy.from_dict({**good_policy(), "units": units})
    assert _CountingName.compared < 3 * n, _CountingName.compared
    with pytest.raises(UserError, match=r"units: duplicate unit names \['unit7'\]"):
        Policy.from_dict({**good_policy(), "units": units + [_CountingName("unit7")]})


# ------------------------------------------------------------------------------ 9: numbers
def test_numbers_out_of_range_are_one_line(tmp_path):
    """--connect-timeout 1e10 overflowed a socket timeout (a traceback); ``families: null`` ran a
    search where ``families: {}`` is refused."""
    import tune_main
    from search_spaces.space import space_from_dict

    with pytest.raises(UserError, match=r"^--connect-timeout: must be a number of seconds within \(0, 86400\], "
                                        r"got 10000000000.0$"):
        tune_main.main(["--preset", "demo", "--address", "127.0.0.1:1", "--connect-timeout", "1e10",
                        "--storage", str(tmp_path / "res")])
    for families in (None, {}):
        with pytest.raises(UserError, match=r"^s.yaml: families: must be a mapping of one or more of "):
            space_from_dict({"model": "digits_cnn", "dataset": "digits", "families": families}, where="s.yaml")
    assert list(space_from_dict({"model": "digits_cnn", "dataset": "digits"}, where="s.yaml").families) == ["layerout"]
    assert not (tmp_path / "res").exists()


def test_a_huge_search_says_what_it_asks_for_and_what_it_needs(tmp_path):
    """10^5 epochs x 10^6 trials started silently; the first lines now say what that asks for,
    and a line after the first epoch what it needs at that rate. Interrupted right after."""
    import select
    import signal
    import subprocess
    import time

    from helpers import cli_env, digits_space

    space = digits_space(tmp_path, "huge", "  layerout: {}", 100_000, scheduler="none", paper=False,
                         extra="num_samples: 1000000").read_text().replace("num_samples: 4\n", "")
    (tmp_path / "huge.yaml").write_text(space.replace("max_concurrent: 2", "max_concurrent: 1"))
    cmd = [sys.executable, str(REPO / "tune_main.py"), "--space", str(tmp_path / "huge.yaml"),
           "--storage", str(tmp_path / "res"), "--name", "huge", "--no-analysis", "--progress-interval", "0"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=cli_env(), start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and select.select([proc.stdout], [], [], deadline - time.time())[0]:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("after the first epoch"):
                break
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    text = "".join(lines)
    assert ("note: that asks for up to 1,000,000 trials x 100,000 epochs = 100,000,000,000 epochs of training; "
            "the time it needs is estimated after the first epoch") in text, text + rest
    assert re.search(r"^after the first epoch: 100,000,000,000 epochs planned, about \d+h\d\dm of training at this "
                     r"rate$", text, re.M), text + rest
    assert proc.returncode == 130, text + rest


# ------------------------------------------------------------------------------ 1: one folder, one search
def test_two_searches_started_together_with_one_name_run_once(tmp_path):
    """Both used to pass the existence check and write into one folder (8 trial folders, a
    trials.csv listing one search's 4). The folder is claimed by one os.mkdir: exactly one search
    runs there, the other exits 2 with one line before anything is written."""
    import subprocess

    from helpers import cli_env, digits_space

    space = digits_space(tmp_path, "twin", "  layerout: {}", 2, scheduler="none", paper=False)
    cmd = [sys.executable, str(REPO / "tune_main.py"), "--space", str(space), "--storage", str(tmp_path / "res"),
           "--name", "twin", "--num-samples", "2", "--no-analysis", "--progress-interval", "0"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env()) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [(p.returncode, o[0][-2000:], o[1][-2000:]) for p, o in zip(procs, outs)]
    loser = next(o for p, o in zip(procs, outs) if p.returncode == 2)
    exp = tmp_path / "res" / "twin"
    assert loser[1].strip().splitlines() == [
        f"error: {exp}: already exists; continue it with --resume {exp} (once no search runs there), or choose "
        "another --name"], loser
    trials = [r["trial_id"] for r in _csv_rows(exp / "trials.csv")]
    assert len(trials) == 2 and sorted(p.name for p in exp.glob("trial_*")) == sorted(f"trial_{t}" for t in trials)


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ 3: what a restore unpickles
_DIES_ONCE = '''
import os

from torch import nn


class DiesOnce(nn.Module):
    """The first worker process that builds it dies (a lost worker: Ray records the trial's error
    in error.pkl); the driver and later workers build it."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        if os.getpid() != int(os.environ["LT22_DRIVER_PID"]):
            try:
                os.close(os.open(os.environ["LT22_DIE_MARK"], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(3)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        return self.head(self.stem(x))
'''


class _FilesRead:
    """Every file under a folder that any process opens for reading and closes, as Linux's inotify
    reports it (IN_CLOSE_NOWRITE: whatever the reader, Python or C++, in this process or a Ray
    worker), relative to the folder."""

    IN_CLOSE_NOWRITE, IN_ISDIR, IN_Q_OVERFLOW = 0x10, 0x40000000, 0x4000

    def __init__(self, top: Path) -> None:
        import ctypes
        import ctypes.util
        import threading

        self.top = top
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0, ctypes.get_errno()
        self.dirs: dict[int, Path] = {}
        for d in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            wd = self.libc.inotify_add_watch(self.fd, str(d).encode(), self.IN_CLOSE_NOWRITE)
            assert wd >= 0, (d, ctypes.get_errno())
            self.dirs[wd] = d
        self.read: set[str] = set()
        self.overflow = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        import select
        import struct

        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            i = 0
            while i < len(buf):
                wd, mask, _, size = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16: i + 16 + size].rstrip(b"\0").decode()
                i += 16 + size
                if mask & self.IN_Q_OVERFLOW:
                    self.overflow = True
                elif not mask & self.IN_ISDIR and wd in self.dirs:
                    self.read.add(str((self.dirs[wd] / name).relative_to(self.top)))

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        os.close(self.fd)
        assert not self.overflow, "inotify dropped events"
        return self.read


# What a resume reads that holds no pickle (besides the files internals.restore_files names): the
# tool's experiment.json, each trial's result.json (the tables) or params.json (a trial that never
# reported: its budget), a checkpoint the trial restarts from
# (checkpoint.pt is read with torch.load(weights_only=True), epochs.csv as text), the trial's scratch
# folder (what it writes in this run).
_READ_AS_DATA = re.compile(r"experiment\.json|trial_\w+/(result|params)\.json"
                           r"|trial_\w+/checkpoint_\d+/(checkpoint\.pt|epochs\.csv)|trial_\w+/scratch(/.*)?")


@pytest.fixture(scope="module")
def failed_once(tmp_path_factory):
    """A finished search of 3 trials (max failures 0) whose first worker died: the baseline ERROR
    with Ray's error.pkl, the shorter-training point (2 of 4 epochs) and a LayerOut trial TERMINATED."""
    import tune_main

    root = tmp_path_factory.mktemp("failed_once")
    (root / "lt22dies.py").write_text(_DIES_ONCE)
    space = root / "dies.yaml"
    space.write_text("name: dies\nmodel: lt22dies:DiesOnce\ndataset: digits\n"
                     "train: {epochs: 4, batch_size: 64, lr: 0.05, augment: false, device: cpu}\n"
                     "families: {layerout: {}}\npaper_configs: false\nreference_budgets: [0.5]\n"
                     "early_stopping: {scheduler: asha, grace_period: 1, reduction_factor: 2}\nnum_samples: 3\n"
                     "max_concurrent: 1\nseed: 0\n")
    os.environ.update(LT22_DRIVER_PID=str(os.getpid()), LT22_DIE_MARK=str(root / "died"))
    rc = tune_main.main(["--space", str(space), "--storage", str(root / "res"), "--name", "dies", "--max-failures",
                         "0", "--no-analysis", "--progress-interval", "0"])
    exp = root / "res" / "dies"
    assert rc == 0 and (root / "died").exists()
    assert len(list(exp.glob("trial_*/error.pkl"))) == 1
    return exp


def test_restore_reads_only_the_files_checked(failed_once, tmp_path):
    """Every file a resume opens holds data, or is among the files the trust and damage checks
    cover (internals.restore_files): a Ray version that unpickles another file fails here."""
    import shutil

    import tune_main
    from tuning import internals

    exp = tmp_path / "dies"
    shutil.copytree(failed_once, exp)
    checked = set(internals.restore_files(str(exp)))
    assert {n.split("-")[0] for n in checked if "/" not in n} == {
        "tuner.pkl", "experiment_state", "search_gen_state", "searcher", "callback"}, checked
    assert [n for n in checked if "/" in n] == [str(p.relative_to(exp)) for p in exp.glob("trial_*/error.pkl")]
    watch = _FilesRead(exp)
    try:
        rc = tune_main.main(["--resume", str(exp), "--no-analysis", "--progress-interval", "0"])
    finally:
        read = watch.stop()
    assert rc == 0
    assert checked <= read, checked - read  # each is read (else the test watches the wrong folder)
    checked |= set(internals.restore_files(str(exp)))  # and the states this run saved (read at its end)
    unchecked = sorted(f for f in read - checked if not _READ_AS_DATA.fullmatch(f))
    assert unchecked == [], f"a resume reads files neither checked nor known to hold only data: {unchecked}"


@pytest.mark.parametrize("pattern", ["search_gen_state-*.json", "trial_*/error.pkl", "trial_*"])
def test_resume_refuses_a_restore_file_others_can_write(failed_once, tmp_path, pattern):
    """search_gen_state-*.json is a pickle despite its name, and a failed trial's error.pkl is
    unpickled too: a crafted one that others could write ran its code on --resume."""
    import shutil

    import tune_main
    from helpers import tree

    exp = tmp_path / "dies"
    shutil.copytree(failed_once, exp)
    target = max(p for p in exp.glob(pattern) if pattern != "trial_*" or (p / "error.pkl").exists())
    os.chmod(target, 0o777 if target.is_dir() else 0o666)
    before = tree(exp)
    with pytest.raises(UserError, match=rf"^--resume {re.escape(str(exp))}: {re.escape(str(target))} can be written "
                                        r"by its group and others \(mode [-d]rw.rw.rw.\); resuming runs code stored"):
        tune_main.main(["--resume", str(exp), "--no-analysis"])
    assert tree(exp) == before


@pytest.mark.parametrize("pattern", ["search_gen_state-*.json", "trial_*/error.pkl"])
def test_resume_with_a_damaged_pickle_names_it(failed_once, tmp_path, pattern):
    """A truncated search_gen_state-*.json was a 14-line Ray traceback whose error named no file."""
    import shutil

    import tune_main
    from helpers import tree

    exp = tmp_path / "dies"
    shutil.copytree(failed_once, exp)
    target = max(exp.glob(pattern))
    target.write_bytes(target.read_bytes()[:40])
    before = tree(exp)
    with pytest.raises(UserError, match=rf"^{re.escape(str(target))}: cannot restore the search from it \(.*\); "
                                        r"Ray Tune's saved state is damaged$"):
        tune_main.main(["--resume", str(exp), "--no-analysis"])
    assert tree(exp) == before


# ------------------------------------------------------------------------------ 5: tables cut short
def _cut_mid_line(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _header_only(path: Path) -> None:
    path.write_text(path.read_text().split("\n", 1)[0] + "\n")


@pytest.mark.parametrize("table, cut", [("trials.csv", _cut_mid_line), ("trials.csv", _header_only),
                                        ("epochs.csv", _cut_mid_line), ("epochs.csv", _header_only)])
def test_tables_cut_short_are_rebuilt_as_they_were(failed_once, tmp_path, table, cut):
    """A trials.csv or epochs.csv cut mid-line or after its header: rebuilt from Ray's result.json
    with the types (and statuses) the whole tables have, and the analysis writes what it wrote from
    them (it failed with a TypeError, after replacing pareto.csv with every trial RUNNING)."""
    import shutil

    import pandas as pd

    from analysis.results import load_experiment
    from analysis.run import run_analysis

    whole = tmp_path / "whole"
    shutil.copytree(failed_once, whole)
    run_analysis(whole, quiet=True)
    exp = tmp_path / "cut"
    shutil.copytree(whole, exp)
    cut(exp / table)
    with pytest.warns(UserWarning, match=rf"{table} cut short.*; the tables were rebuilt from Ray's result.json files "
                                         r"\(3 trials\)"):
        rebuilt = load_experiment(exp)
    original = load_experiment(whole)
    pd.testing.assert_frame_equal(rebuilt.trials, original.trials)
    pd.testing.assert_frame_equal(rebuilt.epochs, original.epochs)
    proc = run_module("analysis", [exp], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (exp / "pareto.csv").read_text() == (whole / "pareto.csv").read_text()
    names = [sorted(p.name for p in (d / "policies").iterdir()) for d in (exp, whole)]
    assert names[0] == names[1]


def test_an_analysis_that_fails_half_way_replaces_nothing(failed_once, tmp_path, monkeypatch):
    """Every file is made first and moved into place at the end: a failure while making the last
    one (here the report) leaves the earlier analysis as it was, and no staging folder behind."""
    import shutil

    import analysis.run
    from helpers import tree

    exp = tmp_path / "exp"
    shutil.copytree(failed_once, exp)
    analysis.run.run_analysis(exp, quiet=True)
    (exp / "trials.csv").write_text((exp / "trials.csv").read_text().replace("TERMINATED", "ERROR", 1))
    before = tree(exp)

    def fails(*args, **kwargs):
        raise RuntimeError("the report could not be made")

    monkeypatch.setattr(analysis.run, "write_report", fails)
    with pytest.raises(RuntimeError, match="the report could not be made"):
        analysis.run.run_analysis(exp, quiet=True)
    assert tree(exp) == before


# ------------------------------------------------------------------------------ 2: an interrupted confirmation
def test_an_interrupted_confirmation_records_nothing_and_a_second_completes(failed_once, tmp_path):
    """SIGTERM during analysis.confirm exited 0 with runs "ended after 0 of 2 epochs" in
    confirm.csv, the analysis rewritten and its verdict flipped. Now: exit 130, the earlier analysis
    as it was; the next confirmation trains every run once."""
    import shutil
    import signal
    import subprocess
    import time

    from analysis.run import run_analysis
    from helpers import cli_env, tree

    exp = tmp_path / "dies"
    shutil.copytree(failed_once, exp)
    run_analysis(exp, quiet=True)
    kept = {k: v for k, v in tree(exp).items() if k != "ray.log"}
    running = exp / ".confirm-running"
    cmd = [sys.executable, "-m", "analysis.confirm", str(exp), "--top", "1", "--seeds", "3", "--progress-interval", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not any(
                p.stat().st_size for p in running.glob("trial_*/result.json")):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGTERM)  # the first run has reported an epoch: the others have not started
        out, err = proc.communicate(timeout=180)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert ("interrupted: this confirmation recorded nothing (confirm.csv and the analysis are as they were); run it "
            f"again to confirm: python -m analysis.confirm {exp}") in err
    assert {k: v for k, v in tree(exp).items() if k != "ray.log" and not k.startswith(".confirm-running")} == kept

    proc = run_module("analysis.confirm", [exp, "--top", "1", "--seeds", "3", "--progress-interval", "0"], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [r for r in _csv_rows(exp / "confirm.csv") if r["kind"] == "run"]
    assert sorted((r["trial_id"], r["seed"]) for r in runs) == sorted({(r["trial_id"], r["seed"]) for r in runs})
    assert len(runs) == 3 and not any(r["error"] for r in runs), runs
    assert not running.exists() and len(list((exp / "confirm").glob("trial_*"))) == 3


# ------------------------------------------------------------------------------ 6: confirmation's own errors
def test_confirmation_on_a_read_only_experiment_or_a_silent_address_is_one_line(failed_once, tmp_path):
    """A read-only experiment was a 35-line pyarrow traceback; the timeout message named
    --connect-timeout, which analysis.confirm did not have."""
    import shutil
    import socket

    from helpers import tree

    exp = tmp_path / "dies"
    shutil.copytree(failed_once, exp)
    before = tree(exp)
    proc = run_module("analysis.confirm", [exp, "--top", "1", "--seeds", "1"], read_only=[exp], timeout=240)
    assert_one_line_error(proc, f"error: {exp}: cannot write there (permission denied); a confirmation writes its "
                                f"runs, confirm.csv and the analysis into the experiment: confirm a writable copy "
                                f"(cp -r {exp} COPY; python -m analysis.confirm COPY)")
    assert tree(exp) == before
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        proc = run_module("analysis.confirm", [exp, "--top", "1", "--seeds", "1", "--address", address,
                                               "--connect-timeout", "3"], timeout=240)
    finally:
        listener.close()
    assert_one_line_error(proc, f"error: --address {address}: something listens there but no Ray cluster answered "
                                "within 3 s (--connect-timeout)")
    assert tree(exp) == before


# ------------------------------------------------------------------------------ 4: a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs of its own (``mount``, as root), unmounted afterwards: a disk that fills."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Write a file until the disk is full, then give back ``leave`` bytes; returns it (remove it to
    free the space)."""
    filler = disk / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * (1 << 12))
                f.flush()
    except OSError:
        pass
    if leave and filler.exists():
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_a_full_disk_stops_the_search_in_one_line_and_it_resumes(small_disk, tmp_path):
    """The storage fills up after the first trial: every trial used to fail, 127 lines of
    tracebacks, exit 1, and Ray's saved state was left cut short, so nothing could be resumed.
    Now the search stops at the first write that fails, with one line naming the file, exit 2;
    the saved state is whole, and once space is freed --resume trains every trial once."""
    import signal
    import subprocess
    import time

    from helpers import cli_env, digits_space
    from tuning import internals

    space = digits_space(tmp_path, "full", "  layerout: {}", 3, scheduler="none", paper=False)
    exp = small_disk / "full"
    cmd = [sys.executable, str(REPO / "tune_main.py"), "--space", str(space), "--storage", str(small_disk),
           "--name", "full", "--num-samples", "4", "--max-concurrent", "1", "--no-analysis", "--progress-interval", "0"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)
    filler = None
    try:
        for line in proc.stdout:
            if line.startswith("[1/4]"):  # the first trial ended: the disk fills up now
                filler = _fill(small_disk)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        kill_group(proc)
        time.sleep(1)
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's processes ended with the driver
    assert filler is not None, out + err
    assert proc.returncode == 2, out[-3000:] + err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"error: {re.escape(str(exp))}/\S+: cannot write \(no space left on device\); the search stopped with its "
        rf"saved state whole: free some space, then continue it with python tune_main.py --resume "
        rf"{re.escape(str(exp))}",
        lines[0]), err
    assert "Traceback" not in out + err
    internals.check_restorable(str(exp))  # every saved state reads whole: none was cut short
    assert internals.has_saved_state(str(exp))

    filler.unlink()
    res = subprocess.run([sys.executable, str(REPO / "tune_main.py"), "--resume", str(exp), "--no-analysis",
                          "--progress-interval", "0"], cwd=tmp_path, capture_output=True, text=True, env=cli_env(),
                         timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = _csv_rows(exp / "trials.csv")
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" and t["epochs_done"] == "3" for t in trials), trials
    epochs = [(r["trial_id"], r["epoch"]) for r in _csv_rows(exp / "epochs.csv")]
    assert len(epochs) == 12 and len(set(epochs)) == 12


def test_a_disk_full_before_ray_saved_anything_is_one_line_and_starts_afresh(small_disk, tmp_path):
    """Too small for Ray's tuner.pkl: one line naming it; grown again, --resume starts afresh."""
    import subprocess

    from helpers import cli_env, digits_space

    subprocess.run(["mount", "-o", "remount,size=16k", str(small_disk)], check=True)
    space = digits_space(tmp_path, "tiny", "  layerout: {}", 2, scheduler="none", paper=False)
    exp = small_disk / "tiny"
    out = _tune_main(["--space", space, "--storage", small_disk, "--name", "tiny", "--num-samples", "2",
                      "--no-analysis", "--progress-interval", "0"], tmp_path)
    assert_one_line_error(out, f"error: {exp}/tuner.pkl: cannot write (no space left on device); the search stopped "
                               f"with its saved state whole: free some space, then continue it with python "
                               f"tune_main.py --resume {exp}")
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    res = subprocess.run([sys.executable, str(REPO / "tune_main.py"), "--resume", str(exp), "--no-analysis",
                          "--progress-interval", "0"], cwd=tmp_path, capture_output=True, text=True, env=cli_env(),
                         timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "starting it afresh" in res.stdout
    assert len(_csv_rows(exp / "trials.csv")) == 2


def test_a_full_disk_during_the_analysis_is_one_line_and_replaces_nothing(failed_once, small_disk):
    """At 600 KB a search ended with exit 0 and report.html never written, after pareto.csv had been
    replaced. Now the analysis that runs out of space (here after its tables and policy files) is
    one line naming the file, exit 2, and the earlier analysis stays whole."""
    import shutil

    from analysis.run import run_analysis
    from helpers import tree

    exp = small_disk / "dies"
    shutil.copytree(failed_once, exp, ignore=shutil.ignore_patterns("checkpoint_*", "events.out*"))
    run_analysis(exp, quiet=True)
    (exp / "trials.csv").write_text((exp / "trials.csv").read_text().replace("TERMINATED", "ERROR", 1))
    before = tree(exp)
    filler = _fill(small_disk, leave=32 << 10)  # room for pareto.csv and the policies, not for the plots
    proc = run_module("analysis", [exp], timeout=240)
    line = assert_one_line_error(proc, "cannot write (no space left on device)")
    assert line.startswith(f"error: {exp}/"), line
    filler.unlink(missing_ok=True)
    assert tree(exp) == before


# ------------------------------------------------------------------------------ 10: noise
def _stale(exp: Path, trial_id: str) -> None:
    """What a driver killed right after the trial ended leaves: Ray's last saved state is from before
    its last epoch (the trial RUNNING, its last result the one before) and so is the driver's copy
    of its result.json; its checkpoint has every epoch."""
    result = exp / f"trial_{trial_id}" / "result.json"
    lines = result.read_text().splitlines(keepends=True)
    result.write_text("".join(lines[:-1]))
    state_file = max(exp.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        if trial["trial_id"] == trial_id:
            assert trial["status"] == "TERMINATED"
            trial["status"] = "RUNNING"
            meta["last_result"] = json.loads(lines[-2])
            entry[0], entry[1] = json.dumps(trial), json.dumps(meta)
    state_file.write_text(json.dumps(state))


def test_a_resumed_search_keeps_ray_warnings_in_its_log_and_prints_each_end_once(failed_once, tmp_path):
    """After --resume, Ray's "Failed to fetch metrics ... result.json ... not found" (for a trial
    without result files) reached stderr, and a trial that had ended before the driver was killed got its
    end line again."""
    import shutil
    import subprocess

    from helpers import cli_env

    exp = tmp_path / "dies"
    shutil.copytree(failed_once, exp)
    trials = {r["reference"]: r["trial_id"] for r in _csv_rows(exp / "trials.csv")}
    ended = trials["shorter-50%"]
    _stale(exp, ended)
    never = next(t for r, t in trials.items() if r not in ("baseline", "shorter-50%"))
    for name in ("result.json", "progress.csv"):  # as a trial queued when the driver stopped has none
        (exp / f"trial_{never}" / name).unlink()
    res = subprocess.run([sys.executable, str(REPO / "tune_main.py"), "--resume", str(exp), "--no-analysis",
                          "--progress-interval", "0"], cwd=tmp_path, capture_output=True, text=True, env=cli_env(),
                         timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stderr == "", res.stderr
    assert "Failed to fetch metrics" in (exp / "ray.log").read_text()
    ends = re.findall(r"^\[\d/3\] trial (\w+) ", res.stdout, re.M)
    assert ends == [trials["baseline"]], res.stdout  # the retried baseline only: the shorter run had ended
    rows = _csv_rows(exp / "epochs.csv")
    assert sorted(int(r["epoch"]) for r in rows if r["trial_id"] == ended) == [1, 2]


def test_an_interrupted_search_without_analysis_points_at_no_analysis(capsys):
    """--no-analysis: the interrupted search's last lines said "the analysis above covers those"."""
    import pandas as pd

    import tune_main
    from tuning import SearchResult

    trials = pd.DataFrame({"trial_id": ["a", "b"], "status": ["TERMINATED", "RUNNING"], "stopped_early": [False, False],
                           "reference": ["", ""], "epochs_done": [2, 1]})
    result = SearchResult(exp_dir="/x/exp", meta={"epochs": 2, "options": {"scheduler": "none"}}, trials=trials,
                          epochs=pd.DataFrame(), wall_s=3.0, planned=4, unfinished=1)
    assert tune_main.report(result, no_analysis=True) == 130
    out = capsys.readouterr().out
    assert "the search was interrupted after 1 of 4 trials. Continue it with:\n  python tune_main.py --resume /x/exp" \
        in out and "analysis above" not in out and out.count("interrupted") == 1


def test_a_search_whose_analysis_finds_the_disk_full_exits_2(tmp_path, monkeypatch):
    """tune_main printed the analysis's write error as a note and exited 0, report.html never written."""
    import pandas as pd

    import tune_main
    from layerout.files import WriteError
    from tuning import SearchResult

    def full(exp, quiet=False):
        raise WriteError(exp / "curves.png", "no space left on device")

    monkeypatch.setattr("analysis.run.run_analysis", full)  # tune_main imports it when it reports
    trials = pd.DataFrame({"trial_id": ["a"], "status": ["TERMINATED"], "stopped_early": [False], "reference": [""],
                           "epochs_done": [2]})
    result = SearchResult(exp_dir=str(tmp_path), meta={"epochs": 2}, trials=trials, epochs=pd.DataFrame(), wall_s=1.0,
                          planned=1)
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path))}/curves.png: cannot write \(no space left on "
                                        rf"device\); the search's results are stored: free some space, then python -m "
                                        rf"analysis {re.escape(str(tmp_path))}$"):
        tune_main.report(result, no_analysis=False, confirm_seeds=0)


def test_an_epochs_table_empty_because_no_trial_trained_an_epoch_is_not_cut(tmp_path):
    """A header-only epochs.csv is whole when Ray's results hold no epoch (every trial ended on a
    user error): no warning, nothing rebuilt."""
    import warnings

    from analysis.results import load_experiment

    exp = tmp_path / "failed"
    (exp / "trial_a").mkdir(parents=True)
    (exp / "experiment.json").write_text(json.dumps({"format": "layerout-experiment", "version": 1, "name": "failed",
                                                     "epochs": 2}))
    (exp / "trial_a" / "result.json").write_text(json.dumps({"epoch": 0, "user_error": "data: boom",
                                                             "trial_id": "a"}) + "\n")
    (exp / "trials.csv").write_text("trial_id,status,epochs_done,error\na,ERROR,0,data: boom\n")
    (exp / "epochs.csv").write_text("trial_id,epoch,val_accuracy\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = load_experiment(exp)
    assert e.source == "csv" and list(e.trials["status"]) == ["ERROR"] and e.epochs.empty
