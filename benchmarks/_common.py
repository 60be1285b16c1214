"""Shared helpers for the benchmark scripts: environment record, medians, JSON output, tables.

Not a test helper: nothing here asserts on timing. Every script records where and how it ran
(device name, versions, threads, load average, git commit, command line) next to its numbers,
because a number without its machine is useless.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

ROOT = Path(__file__).resolve().parent.parent
# where a script writes its JSON unless --json says otherwise: an untracked folder, so running a
# benchmark never rewrites a recorded result (record one with --json benchmarks/results/NAME.json)
OUT_DIR = ROOT / "runs" / "benchmarks"

if str(ROOT) not in sys.path:  # `python benchmarks/x.py` from the repository root
    sys.path.insert(0, str(ROOT))


def median(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def command_line() -> str:
    """The command as it was typed (relative to the repository root where possible)."""
    exe = os.path.abspath(sys.executable)  # not resolved: keep .venv/bin/python, not the interpreter it links to
    if Path(exe).is_relative_to(ROOT):
        exe = os.path.relpath(exe, ROOT)
    return " ".join(shlex.quote(a) for a in [exe, *sys.argv])


def git_commit() -> str | None:
    """HEAD's short hash, plus the tracked files (outside benchmarks/) modified in the working tree."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0:
            return None
        st = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
        dirty = [ln[3:] for ln in st.stdout.splitlines() if not ln[3:].startswith("benchmarks/")]
        return out.stdout.strip() + (f" + uncommitted changes to {', '.join(dirty)}" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    """Where this ran: device name, versions, threads, load (other work on the machine skews CPU numbers)."""
    import torch

    env: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        env["device_name"] = torch.cuda.get_device_name(idx)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device_name"] = f"CPU: {env['cpu']}, {env['cpu_count']} cores, {env['torch_threads']} torch threads"
    for mod in ("ray", "optuna", "numpy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            env[mod] = None
    return env


def finish_environment(env: dict[str, Any]) -> None:
    if hasattr(os, "getloadavg"):
        env["loadavg_end"] = list(os.getloadavg())


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain fixed-width table (also valid-looking Markdown when pasted between pipes)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != v:  # nan
            return "n/a"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


@contextlib.contextmanager
def trial_function(fn: Callable[..., None]) -> Iterator[None]:
    """Searches started inside run ``fn`` as every trial's function instead of ``train_trial``
    (``run_search`` builds its trainable with ``tuning.cluster.trainable``, whose ``fn`` this fixes)."""
    import tuning.cluster as cluster

    original = cluster.trainable
    cluster.trainable = functools.partial(original, fn=fn)
    try:
        yield
    finally:
        cluster.trainable = original
