"""Honest compute accounting: the FLOPs autograd really runs for a mask, and measured time.

``step_flops`` runs one real forward + backward of the model under ``FlopCounterMode`` with
the mask's ``requires_grad`` settings. Autograd then skips exactly what freezing saves: a frozen
unit's weight-gradient work always, and the input-gradient work of a frozen prefix (nothing
before it needs a gradient). Parameter counts would claim far more (docs/METRICS.md: a frozen
parameter is not a FLOP saved).

Counts are per sample (matmuls and convolutions are linear in the batch), measured on a tiny
batch with the model in eval mode so BatchNorm statistics are untouched, and cached per mask.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def step_flops(model: nn.Module, unit_params: list[list[nn.Parameter]], frozen: tuple[bool, ...],
               x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn = nn.functional.cross_entropy) -> int:
    """FLOPs of one training step (forward + backward) on batch ``x`` with ``frozen`` units.

    The model's parameters, gradients, ``requires_grad`` flags, train/eval modes and buffers are
    left exactly as they were. A mask freezing every unit (with no other parameters) raises
    ValueError: there would be nothing to train.
    """
    if len(frozen) != len(unit_params):
        raise ValueError(f"mask has {len(frozen)} entries for {len(unit_params)} units")
    in_units = {id(p) for ps in unit_params for p in ps}
    others = [p for p in model.parameters() if id(p) not in in_units]
    if all(frozen) and not any(p.requires_grad for p in others):
        raise ValueError("a mask may not freeze every unit: nothing would train")
    params = list(model.parameters())
    saved_rg = [p.requires_grad for p in params]
    saved_grad = [p.grad for p in params]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()  # BatchNorm uses running stats and does not update them; FLOPs of convs/matmuls are the same
        for ps, f in zip(unit_params, frozen):
            for p in ps:
                p.requires_grad_(not f)
        for p in params:
            p.grad = None
        with FlopCounterMode(display=False) as counter:
            loss = loss_fn(model(x), y)
            loss.backward()
        return int(counter.get_total_flops())
    finally:
        for p, rg, g in zip(params, saved_rg, saved_grad):
            p.requires_grad_(rg)
            p.grad = g
        for m, mode in modes:
            m.training = mode


def forward_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FLOPs of one forward pass on batch ``x`` per module path (``""`` = the whole model), in eval
    mode with gradients off; the model's modes are restored. A module's count includes its children's."""
    modes = [(m, m.training) for m in model.modules()]
    root = type(model).__name__
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for m, mode in modes:
            m.training = mode
    out: dict[str, int] = {}
    for key, per_op in counter.get_flop_counts().items():  # keys: "Global", "<Root>", "<Root>.<path>"
        if key == root:
            out[""] = int(sum(per_op.values()))
        elif key.startswith(root + "."):
            out[key[len(root) + 1:]] = int(sum(per_op.values()))
    return out


# Per-sample FLOPs by (model identity, mask), shared by the FlopCaches of one process: the trials
# of a search run one after another in a reused worker process and meet the same masks of the same
# model again; probing each costs a forward and backward under torch's FLOP counter (tens of
# milliseconds on the demo's model, more on large ones). Only for a ``shared_key`` that names the
# model completely (``Trainer``: built-in models only; your own model's FLOPs may depend on its
# code, which the key cannot see).
SHARED_FLOPS: dict[tuple[Any, tuple[bool, ...]], float] = {}


class FlopCache:
    """Per-sample training FLOPs for each mask seen, measured once on a small probe batch (once
    per process for models with a ``shared_key``: ``SHARED_FLOPS``)."""

    def __init__(self, model: nn.Module, unit_params: list[list[nn.Parameter]], probe_x: torch.Tensor,
                 probe_y: torch.Tensor, loss_fn: LossFn = nn.functional.cross_entropy,
                 shared_key: Any = None) -> None:
        self.model, self.unit_params, self.loss_fn = model, unit_params, loss_fn
        self.probe_x, self.probe_y = probe_x, probe_y
        self.shared_key = shared_key
        self.per_sample: dict[tuple[bool, ...], float] = {}

    def __call__(self, frozen: tuple[bool, ...]) -> float:
        key = tuple(bool(f) for f in frozen)
        if key not in self.per_sample:
            shared = (self.shared_key, key) if self.shared_key is not None else None
            if shared is not None and shared in SHARED_FLOPS:
                self.per_sample[key] = SHARED_FLOPS[shared]
            else:
                n = len(self.probe_x)
                self.per_sample[key] = step_flops(self.model, self.unit_params, key, self.probe_x,
                                                  self.probe_y, self.loss_fn) / n
                if shared is not None:
                    SHARED_FLOPS[shared] = self.per_sample[key]
        return self.per_sample[key]


# The clocks time_saved_frac is measured on (ComputeLedger.clock). On CPU, the process's CPU time:
# what the run itself consumed, all its threads together, which other processes on a shared
# machine do not stretch (wall-clock does: a trial sharing its cores with another saw -37% "time
# saved" at 48% of the FLOPs saved). On CUDA, wall-clock with the device synchronized before each
# reading: the GPU's own time, which CPU time does not see.
CLOCKS = ("process_cpu", "cuda_wall", "wall")


def clock_for(device: torch.device) -> str:
    """The clock a run on ``device`` measures its training time with (``CLOCKS``)."""
    return "cuda_wall" if device.type == "cuda" else "process_cpu" if device.type == "cpu" else "wall"


def read_clock(clock: str) -> float:
    """Seconds on ``clock`` (only differences mean something); synchronize the device first on CUDA."""
    return time.process_time() if clock == "process_cpu" else time.perf_counter()


def saved_frac(spent: float, unfrozen: float, budget_scale: float = 1.0) -> float:
    """compute_saved_frac: 1 - FLOPs spent / FLOPs of the unfrozen model on the same steps (times
    ``budget_scale``: a shorter run is measured against its budget's); 0 before any step."""
    return 1.0 - spent / (unfrozen * budget_scale) if unfrozen else 0.0


@dataclass
class ComputeLedger:
    """Running totals behind compute_saved_frac, compute_spent_gflop, params_frozen_frac,
    time_saved_frac and train_time_s. Plain numbers only, so it round-trips through a checkpoint.

    Two times per epoch: ``train_time_s`` is wall-clock (what a user waits), ``train_clock_s``
    the same steps on ``clock`` (``CLOCKS``), which the step times and ``time_saved_frac`` use."""

    flops_spent: float = 0.0
    flops_unfrozen: float = 0.0
    samples: int = 0
    steps: int = 0
    frozen_frac_sum: float = 0.0  # sum over epochs of the epoch's mean frozen-parameter fraction
    epochs: int = 0
    train_time_s: float = 0.0  # wall-clock
    unfrozen_step_times: list[float] = field(default_factory=list)  # per-step time (on clock) of unfrozen epochs
    calibration_step_s: float | None = None  # on clock
    # "calibration": the reference is the calibrated step even when unfrozen epochs exist (the graph
    # fast path: its unfrozen epochs include warm-up steps and captures, which would inflate it)
    reference: str = "epochs"
    # a run shorter than its budget (TrainConfig.budget_epochs): budget epochs / epochs. The
    # savings are measured against the unfrozen model trained for the whole budget, i.e. the
    # unfrozen FLOPs (and steps) counted so far scaled by it; 1 for every other run
    budget_scale: float = 1.0
    clock: str = "wall"
    train_clock_s: float = 0.0

    def add_samples(self, flops_per_sample: float, unfrozen_per_sample: float, n: int) -> None:
        self.flops_spent += flops_per_sample * n
        self.flops_unfrozen += unfrozen_per_sample * n
        self.samples += n

    def end_epoch(self, frozen_frac: float, seconds: float, steps: int, unfrozen_epoch: bool,
                  clock_seconds: float | None = None) -> None:
        """``seconds``: the epoch's training wall-clock; ``clock_seconds``: the same on ``clock``
        (None: the wall-clock, for a ledger whose clock is ``wall``)."""
        on_clock = seconds if clock_seconds is None else clock_seconds
        self.frozen_frac_sum += frozen_frac
        self.epochs += 1
        self.train_time_s += seconds
        self.train_clock_s += on_clock
        self.steps += steps
        if unfrozen_epoch and steps:
            self.unfrozen_step_times.append(on_clock / steps)

    @property
    def compute_saved_frac(self) -> float:
        return saved_frac(self.flops_spent, self.flops_unfrozen, self.budget_scale)

    @property
    def compute_spent_gflop(self) -> float:
        return self.flops_spent / 1e9

    @property
    def params_frozen_frac(self) -> float:
        return self.frozen_frac_sum / self.epochs if self.epochs else 0.0

    @property
    def unfrozen_step_s(self) -> float | None:
        """The reference (on ``clock``): median per-step time of this run's unfrozen epochs, else the calibration."""
        if self.reference == "calibration" and self.calibration_step_s:
            return self.calibration_step_s
        if self.unfrozen_step_times:
            t = sorted(self.unfrozen_step_times)
            mid = len(t) // 2
            return t[mid] if len(t) % 2 else 0.5 * (t[mid - 1] + t[mid])
        return self.calibration_step_s

    @property
    def time_saved_frac(self) -> float | None:
        ref = self.unfrozen_step_s
        if not ref or not self.steps:
            return None
        return 1.0 - self.train_clock_s / (self.steps * ref * self.budget_scale)

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_state_dict(cls, d: dict) -> "ComputeLedger":
        if "clock" not in d:  # a checkpoint from before the clocks: its times are wall-clock
            d = {**d, "clock": "wall", "train_clock_s": d.get("train_time_s", 0.0)}
        return cls(**d)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock readings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_unfrozen_steps(step: Callable[[], None], device: torch.device, warmup: int = 2, repeats: int = 5,
                        clock: str = "wall") -> float:
    """Median seconds on ``clock`` of ``step()`` (one unfrozen training step on a throwaway copy)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = read_clock(clock)
        step()
        synchronize(device)
        times.append(read_clock(clock) - t0)
    times.sort()
    return times[len(times) // 2]
