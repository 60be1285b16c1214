"""Helpers shared by the tests (imported as ``helpers``: pytest puts tests/ on sys.path)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from layerout.schedules import FreezeState, Schedule

REPO = Path(__file__).resolve().parents[1]
# The per-epoch metrics in column order, spelled out here so a renamed column fails the tests.
METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "test_accuracy", "params_frozen_frac",
                  "compute_saved_frac", "planned_compute_saved_frac", "compute_spent_gflop", "time_saved_frac",
                  "train_time_s"]
TIMING = {"train_time_s", "time_saved_frac"}
DIGITS_UNITS = ["conv1", "conv2", "head"]
# digits_cnn's forward FLOPs per sample, by hand (2 per multiply-add; bias, BatchNorm, ReLU uncounted):
# conv1 3x3, 1 -> 32 channels at 8x8: 2 * 32*8*8 * 1*9; conv2 3x3 stride 2, 32 -> 64 at 4x4: 2 * 64*4*4 * 32*9;
# head 1024 -> 10: 2 * 1024*10
DIGITS_FWD = [2 * 32 * 8 * 8 * 9, 2 * 64 * 4 * 4 * 32 * 9, 2 * 1024 * 10]


def hand_step_flops(mask, fwd=DIGITS_FWD):
    """Per-sample FLOPs of one training step of a chain of units with forward costs ``fwd``: every
    forward, the weight gradient of each trainable unit (one forward's cost), and the input gradient
    of each unit that has a trainable unit before it (unit 0's input, the data, never needs one)."""
    total = sum(fwd)
    for i, frozen in enumerate(mask):
        if not frozen:
            total += fwd[i]
        if i > 0 and not all(mask[:i]):
            total += fwd[i]
    return total


def hand_saved_frac(step_masks, fwd=DIGITS_FWD):
    """compute_saved_frac of a run whose steps (all of one batch size) had these masks ("010" or bools)."""
    masks = [tuple(c == "1" for c in m) if isinstance(m, str) else tuple(m) for m in step_masks]
    unfrozen = hand_step_flops((False,) * len(fwd), fwd)
    return 1 - sum(hand_step_flops(m, fwd) for m in masks) / (len(masks) * unfrozen)


class MaskList(Schedule):
    """A test schedule: epoch e gets masks[e] (not registered: never leaves this file)."""

    kind = "_test_masks"

    def __init__(self, masks):
        self.masks = [tuple(bool(f) for f in m) for m in masks]

    def state(self, epoch, step=0):
        return FreezeState(frozen=self.masks[epoch])

    def to_dict(self):
        return {"kind": self.kind}


def snapshot(params_per_unit, optimizer):
    """Per unit: (parameter copies, momentum-buffer copies or None)."""
    out = []
    for ps in params_per_unit:
        bufs = []
        for p in ps:
            st = optimizer.state.get(p, {})
            b = st.get("momentum_buffer")
            bufs.append(None if b is None else b.detach().clone())
        out.append(([p.detach().clone() for p in ps], bufs))
    return out


def same_tensors(a, b):
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b))


def hand_loop(model, freezer, optimizer, epochs, steps, seed=0, check=None, set_to_none=True):
    """A user's plain loop with a Freezer on random data; ``check(epoch, state, before, after)``."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(epochs * steps, 8, 6, generator=g)
    ys = torch.randint(0, 4, (epochs * steps, 8), generator=g)
    for epoch in range(epochs):
        before = snapshot(freezer.params, optimizer)
        model.train()
        state = freezer.on_epoch_start(epoch)
        for step in range(steps):
            freezer.on_step(step)
            x, y = xs[epoch * steps + step], ys[epoch * steps + step]
            optimizer.zero_grad(set_to_none=set_to_none)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        after = snapshot(freezer.params, optimizer)
        if check:
            check(epoch, state, before, after)


def check_epoch(before, after, mask, where=""):
    """Frozen units: parameters and momentum buffers bit-identical; trainable units: parameters changed."""
    for i, frozen in enumerate(mask):
        (p0, b0), (p1, b1) = before[i], after[i]
        if frozen:
            assert same_tensors(p0, p1), f"{where}: frozen unit {i} changed its parameters"
            assert same_tensors(b0, b1), f"{where}: frozen unit {i} changed its momentum buffer"
        else:
            assert not all(torch.equal(x, y) for x, y in zip(p0, p1)), f"{where}: trainable unit {i} did not train"


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cli_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # subprocesses run side by side on 2 cores
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")  # this checkout's code, from any cwd
    env.pop("PYTHONWARNINGS", None)
    return env


# Run a module with some folders read-only, as root too (root ignores permission bits): every write
# Python makes inside them (os.open, open, mkdir, rename, unlink) fails with EACCES, as it would for a
# user without write permission. argv: the folders (os.pathsep-separated), the module, its arguments.
_READ_ONLY_BOOT = r"""
import builtins, errno, io, os, runpy, sys
_ro = [os.path.realpath(p) for p in sys.argv[1].split(os.pathsep)]
def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except TypeError:
        return False
    return any(p == r or p.startswith(r + os.sep) for r in _ro)
def _deny(path):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
def _guard(fn, *checked):
    def wrapper(*a, **k):
        for i in checked:
            if i < len(a) and _inside(a[i]):
                _deny(a[i])
        return fn(*a, **k)
    return wrapper
_os_open, _open = os.open, builtins.open
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _os_open_ro(path, flags, *a, **k):
    if flags & _WRITE and _inside(path):
        _deny(path)
    return _os_open(path, flags, *a, **k)
def _open_ro(file, mode="r", *a, **k):
    if not isinstance(file, int) and any(c in mode for c in "wax+") and _inside(file):
        _deny(file)
    return _open(file, mode, *a, **k)
os.open, builtins.open, io.open = _os_open_ro, _open_ro, _open_ro
os.mkdir, os.rmdir, os.unlink, os.remove = (_guard(os.mkdir, 0), _guard(os.rmdir, 0), _guard(os.unlink, 0),
                                           _guard(os.remove, 0))
os.rename, os.replace = _guard(os.rename, 0, 1), _guard(os.replace, 0, 1)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _without_write_bits(paths):
    """Remove every write permission bit under ``paths``; returns what to restore."""
    saved = []
    for top in paths:
        for p in [Path(top), *Path(top).rglob("*")]:
            mode = p.stat().st_mode
            saved.append((p, mode))
    for p, mode in saved:
        os.chmod(p, mode & ~0o222)
    return saved


def run_module(module: str, args, timeout=240, cwd=REPO, read_only=()):
    """``python -m module args`` in a subprocess (one thread: several run side by side on 2 cores).
    ``read_only``: folders the command may read but not write (permission bits removed for the
    run; for root, which ignores them, Python's writes into them fail as they would)."""
    args = [str(a) for a in args]
    if not read_only:
        cmd = [sys.executable, "-m", module, *args]
    elif os.geteuid() == 0:
        cmd = [sys.executable, "-c", _READ_ONLY_BOOT, os.pathsep.join(map(str, read_only)), module, *args]
    else:
        saved = _without_write_bits(read_only)
        try:
            return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(),
                                  capture_output=True, text=True, timeout=timeout)
        finally:
            for p, mode in reversed(saved):
                os.chmod(p, mode)
    return subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def tree(path):
    """Every file and folder under ``path`` with each file's bytes: to check that nothing changed."""
    path = Path(path)
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def run_cli(args, timeout=240):
    """``python -m layerout.train args``."""
    return run_module("layerout.train", args, timeout)


def run_cli_many(cases: dict, workers=3):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = {k: pool.submit(run_cli, a) for k, a in cases.items()}
        return {k: f.result() for k, f in futs.items()}


def assert_one_line_error(proc, *needles):
    """Exit 2, one stderr line 'error: ...' naming what it should, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), lines[0]
    for n in needles:
        assert str(n) in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def good_policy(**schedule):
    sched = {"kind": "layerout", "v": [0.9, 0.5, 0.1], "v_mode": "manual", "warmup_epochs": 1,
             "keep_last_trainable": False, "seed": 3, **schedule}
    return {"format": "layerout-policy", "version": 1, "model": "digits_cnn", "units": list(DIGITS_UNITS),
            "schedule": sched, "measured": {"val_accuracy": 0.97, "compute_saved_frac": 0.2},
            "provenance": {"dataset": "digits", "epochs": 4, "seed": 0}}


def _bad_policies():
    """name -> (policy text, words the one-line error must contain)."""
    def doc(f):
        d = good_policy()
        f(d)
        return json.dumps(d)

    return {
        "wrong_length": (doc(lambda d: d["schedule"].update(v=[0.5, 0.5])), ["schedule.v", "2 values", "3 units"]),
        "outside_01": (doc(lambda d: d["schedule"].update(v=[0.5, 1.5, 0.1])), ["schedule.v[1]", "1.5", "[0, 1]"]),
        "warmup_ge_epochs": (doc(lambda d: d["schedule"].update(warmup_epochs=4)), ["warmup_epochs", "4 epochs"]),
        "other_units": (doc(lambda d: d.update(units=["conv1", "convB", "head"])),
                        ["units", "'convB' in the policy but 'conv2' in the model"]),
        "malformed_json": ('{"format": "layerout-policy", "version": 1,', ["not valid JSON", "line"]),
        "wrong_format": (doc(lambda d: d.update(format="layerout-polcy")), ["format", "'layerout-polcy'"]),
        "wrong_version": (doc(lambda d: d.update(version=2)), ["version", "2"]),
        "unknown_kind": (doc(lambda d: d.update(schedule={"kind": "freezeall"})),
                         ["schedule.kind", "'freezeall'", "allowed", "layerout"]),
    }


BAD = _bad_policies()


def digits_space(tmp_path: Path, name: str, families: str, epochs: int, scheduler: str = "moasha",
                 paper: bool = True, extra: str = "", confirm: int = 0) -> Path:
    """A small search space file on the bundled digits (4 trials, 2 at once, no reference points,
    no confirmation at the end unless ``confirm`` seeds)."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
name: {name}
model: digits_cnn
dataset: digits
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, augment: false, device: cpu}}
families:
{families}
paper_configs: {str(paper).lower()}
paper_warmup_epochs: 1
reference_budgets: false
confirm: {{seeds: {confirm}}}
early_stopping: {{scheduler: {scheduler}, grace_period: 1, reduction_factor: 2}}
num_samples: 4
max_concurrent: 2
seed: 0
{extra}
""")
    return p


def kill_driver_when(cmd: list[str], cwd: Path, env: dict[str, str], ready, timeout: float,
                     settle: float = 0.0) -> None:
    """Start the search driver ``cmd`` (its output in ``cwd/driver.log``), wait until ``ready()``
    is true (within ``timeout`` s; the driver must still run), ``settle`` s more, call ``ready()``
    once more (the state just before the kill), then SIGKILL the driver alone, as a crash would,
    and afterwards the Ray processes it started (its own session: ours to clean up). An
    AssertionError with the log's tail if the driver ended first."""
    import signal
    import time

    log_path = Path(cwd) / "driver.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None and not ready():
                time.sleep(0.2)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert ready(), f"not ready within {timeout} s: " + log_path.read_text()[-3000:]
            time.sleep(settle)
            ready()
            os.kill(proc.pid, signal.SIGKILL)  # the driver only
            proc.wait()
        finally:
            time.sleep(1.0)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def kill_group(proc: subprocess.Popen) -> None:
    """After a test's driver (started with ``start_new_session=True``): whatever the test asserts,
    the driver and Ray's processes in its group end with it."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
