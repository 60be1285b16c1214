"""What decides a run's arithmetic besides its recipe: the intra-op thread count, and on CUDA
the determinism settings.

The same recipe computed with 1 thread and with 2 rounds its reductions differently, and
training amplifies the difference: a search trial (Ray gives it one thread per CPU it holds)
replayed with all of a machine's threads ended 3 points of validation accuracy away. A run
therefore records the thread count it computed with (``TrainConfig.threads``) and computes with
the recorded one when its recipe is replayed; on the same kind of machine the replay then
reproduces the run's figures exactly. On CUDA, ``TrainConfig.deterministic`` asks for
deterministic kernels (cuDNN's deterministic algorithms, no autotuning), without which two runs
on one GPU differ in the last digits and then more.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from layerout.checks import short
from layerout.errors import UserError


def current_threads() -> int:
    """The intra-op thread count torch computes with now in this process."""
    return int(torch.get_num_threads())


@contextlib.contextmanager
def computing_with(threads: int | None, deterministic: bool = False) -> Iterator[None]:
    """Compute with ``threads`` intra-op threads (None: as now) and, when ``deterministic``,
    deterministic algorithms (cuDNN's among them); both are process-wide settings of torch,
    restored on exit so a run leaves its caller as it found it."""
    before = current_threads()
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if threads and threads != before:
            torch.set_num_threads(int(threads))
        if deterministic:
            cudnn.deterministic, cudnn.benchmark = True, False
            # warn_only: an operation without a deterministic kernel warns instead of failing the run
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        if current_threads() != before:
            torch.set_num_threads(before)
        cudnn.deterministic, cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def threads_note(chosen: int, recorded: int | None, source: str) -> str | None:
    """The one line said when a replay computes with other threads than its run recorded."""
    if recorded is None or int(recorded) == int(chosen):
        return None
    return (f"note: computing with {chosen} intra-op threads, while the run of {source} used {recorded}: the "
            f"figures will differ from its own (they are exact only with --threads {recorded})")


def resolve_device(name: str) -> torch.device:
    """The device a recipe's ``device`` names (auto: CUDA where there is a GPU); one line where none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"device: unknown device {short(name)}; allowed: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {short(name)} asked for but no CUDA GPU is available; use --device cpu")
    return dev
