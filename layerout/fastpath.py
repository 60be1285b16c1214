"""The training step, run eagerly or by replaying one captured CUDA graph per freezing mask.

Why graphs: small CIFAR networks are launch-bound on a modern GPU (docs/METRICS.md, "GPU
measurements": ResNet-110 at batch 128 trains at 2.7 k images/s eager, and freezing every other
unit saved 16% of its FLOPs and none of its time). Replaying a captured graph removes the
per-kernel CPU launch cost, so a step's time follows the work it does, and a mask that drops
kernels makes the step shorter.

How:

* One graph per distinct mask, captured lazily and kept in a small LRU cache. LayerOut changes
  the mask at most once per epoch, FreezeOut a few times per run, so capture is rare. All graphs
  share one memory pool: each graph reads only tensors allocated outside the pool (parameters,
  momentum buffers, the static batch, the lr tensor, the loss/grad-norm accumulators) and
  produces everything else within its own replay, so replay order does not matter.
* The first ``warmup`` steps of a new mask run eagerly on a side stream (PyTorch's whole-network
  capture recipe: cuBLAS/cuDNN set themselves up lazily, which must not happen during capture),
  and they are real training steps: SGD creates the momentum buffers of newly trainable units
  there, outside the graph's pool.
* The SGD update inside the graph is written here (``sgd_update``) instead of calling
  ``torch.optim.SGD.step``: SGD turns a tensor lr into a Python number (``.item()``), which cannot
  be captured, and a float lr would be baked into the graph, while ours changes per epoch
  (milestones) or per step (FreezeOut). ``sgd_update`` does SGD's arithmetic (weight decay,
  momentum) on the optimizer's own momentum buffers and reads each param group's lr from a device
  tensor refreshed only when the lrs change, so checkpoints, resumes and eager steps (the last,
  smaller batch of an epoch) mix freely with replays.
* Freezing semantics are unchanged: a frozen unit's parameters have ``requires_grad`` off when its
  graph is captured, so the graph holds no gradient kernels, no update and no weight decay for
  them, and their momentum buffers are not touched.

* A self-check guards against silent errors: the second replay of the first graph (so a batch
  other than the captured one goes through it) is also run eagerly from the same state (weights,
  buffers, momentum, accumulators, RNG), and the two results must agree to rounding; otherwise
  the eager result is kept and the graph path turns off. It costs one extra step per run.

What the graph path cannot express runs eagerly: CPU, SGD with nesterov/dampening/maximize or
another optimizer, a batch of another size. ``"auto"`` (the trainer's default) uses graphs where
they can run and trains eagerly elsewhere, silently; ``"cudagraph"`` says in one line why it
cannot. A failed capture or self-check prints one line and turns the graph path off for the rest
of the run.
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from layerout.choices import FAST_PATHS  # noqa: F401 - also this module's name
from layerout.progress import slow_notice


Mask = tuple[bool, ...]


def graph_support(optimizer: torch.optim.Optimizer, device: torch.device) -> str | None:
    """Why the graph path cannot run this optimizer on this device (None: it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if type(optimizer) is not torch.optim.SGD:
        return f"the graph path implements torch.optim.SGD only, not {type(optimizer).__name__}"
    for g in optimizer.param_groups:
        if g.get("nesterov") or g.get("dampening") or g.get("maximize"):
            return "the graph path implements plain SGD (no nesterov, dampening or maximize)"
    return None


@torch.no_grad()
def sgd_update(optimizer: torch.optim.SGD, neg_lr: torch.Tensor) -> None:
    """One SGD step over the parameters that have a gradient, with group ``i``'s lr read from
    ``-neg_lr[i]`` (a device tensor, so a captured graph sees lr changes).

    Same arithmetic as ``torch.optim.SGD``'s foreach path: d = grad + wd * p; buf = m * buf + d;
    p -= lr * buf. Every momentum buffer must already exist (a graph cannot create persistent
    state); the graph path's eager warm-up steps create them.
    """
    for i, group in enumerate(optimizer.param_groups):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if group["momentum"]:
            bufs = []
            for p in params:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is None:
                    raise RuntimeError("sgd_update: a trainable parameter has no momentum buffer yet")
                bufs.append(buf)
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            grads = bufs
        torch._foreach_add_(params, torch._foreach_mul(grads, neg_lr[i]))


class StepRunner:
    """Runs training steps (forward, loss, backward, SGD) and sums the loss on the device.

    ``mode``: ``"eager"``; ``"cudagraph"`` (see the module docstring); ``"auto"``: cudagraph where
    ``graph_support`` allows, else eager without a word; ``"emulate"`` runs the graph
    path's exact sequence (warm-up, static buffers, ``sgd_update`` with the lr tensor, LRU cache)
    with "capture" recording the step and "replay" running it eagerly, so the graph path's logic is
    tested on CPU. ``after_backward(mask)`` runs between backward and the update (gradient
    statistics); it must only do tensor work on the device, adding into ``accumulators`` (device
    tensors the self-check saves and compares with the model's state).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                 device: torch.device, mode: str = "eager",
                 after_backward: Callable[[Mask], None] | None = None, accumulators: Sequence[torch.Tensor] = (),
                 warmup: int = 3, max_graphs: int = 8, self_check: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        if mode not in ("eager", "auto", "cudagraph", "emulate"):
            raise ValueError(f"mode must be eager, auto, cudagraph or emulate, not {mode!r}")
        self.model, self.optimizer, self.loss_fn, self.device = model, optimizer, loss_fn, device
        self.after_backward, self.accumulators = after_backward, list(accumulators)
        self.warmup, self.max_graphs = warmup, max_graphs
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.mode = mode
        self.off_reason: str | None = None  # why a graph path turned itself off
        self.checked = not self_check  # True once the self-check passed (or when there is none)
        self.loss_sum = torch.zeros((), device=device)  # persistent: captured graphs add into it
        self.graphs: OrderedDict[Mask, object] = OrderedDict()
        self.eager_steps: dict[Mask, int] = {}
        self.captures = 0
        self.replays = 0
        self._pool = None
        self._side = None
        self._static_x: torch.Tensor | None = None
        self._static_y: torch.Tensor | None = None
        self._neg_lr: torch.Tensor | None = None
        self._lrs: tuple[float, ...] | None = None
        if mode in ("auto", "cudagraph"):
            why = graph_support(optimizer, device)
            self.mode = "cudagraph"
            if why:
                self.turn_off(why, quiet=mode == "auto")

    # ------------------------------------------------------------------ the step
    def step(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> None:
        """One training step on batch (x, y) under ``mask`` (already applied by the Freezer)."""
        if self.mode == "eager" or (self._static_x is not None and x.shape != self._static_x.shape):
            self._eager(x, y, mask)
            return
        graph = self.graphs.get(mask)
        if graph is not None:
            self.graphs.move_to_end(mask)
            if self.checked:
                self._replay(graph, x, y)
            else:
                self._self_check(graph, x, y, mask)
            return
        seen = self.eager_steps.get(mask, 0)
        if seen < self.warmup:
            self.eager_steps[mask] = seen + 1
            self._warmup_step(x, y, mask)
            return
        try:
            graph = self._capture(x, y, mask)
        except Exception as e:  # noqa: BLE001 - any capture failure: say so once, train on eagerly
            self.turn_off(f"capture failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            self.optimizer.zero_grad(set_to_none=True)
            self._eager(x, y, mask)
            return
        self.graphs[mask] = graph
        if len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        self._replay(graph, x, y)  # capture recorded the step without running it

    def turn_off(self, reason: str, quiet: bool = False) -> None:
        """Train eagerly from now on (the graph path cannot run, or ran wrong), saying why once."""
        if not quiet:
            self.log(f"fast path cudagraph off: {reason}; training eagerly")
        self.mode, self.off_reason = "eager", reason
        self.graphs.clear()

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> None:
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.after_backward is not None:
            self.after_backward(mask)
        self.loss_sum += loss.detach() * x.shape[0]

    def _eager(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> None:
        self._forward_backward(x, y, mask)
        self.optimizer.step()

    def _graph_body(self, mask: Mask) -> None:
        assert self._static_x is not None and self._static_y is not None and self._neg_lr is not None
        self._forward_backward(self._static_x, self._static_y, mask)
        sgd_update(self.optimizer, self._neg_lr)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ self-check
    def _state_tensors(self) -> list[torch.Tensor]:
        """Every tensor a training step changes: weights, buffers, optimizer state, accumulators."""
        opt_state = [t for st in self.optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), *opt_state, self.loss_sum, *self.accumulators]

    def _self_check(self, graph: object, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> None:
        """Run this step eagerly and by replay from the same state; keep the replay's result if the
        two agree to rounding, else keep the eager one and turn the graph path off.

        Agreement: the L2 difference over all float state is at most 1e-3 of the step's own change
        plus 1e-6 of the state's size (the graph's SGD rounds ``p + (-lr)*buf`` in two steps, and
        some cuDNN backward kernels are not deterministic); integer state must be equal. A replay
        that reads a stale batch, a stale lr or misses a kernel differs by about the whole step.
        """
        state = self._state_tensors()
        before = [t.clone() for t in state]
        rng = _rng_state(self.device)
        self._eager(x, y, mask)
        eager = [t.clone() for t in state]
        with torch.no_grad():
            for t, b in zip(state, before):
                t.copy_(b)
        _set_rng_state(self.device, rng)
        self._replay(graph, x, y)
        self.checked = True
        with torch.no_grad():
            sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # diff², change², size², int mismatches
            for t, e, b in zip(state, eager, before):
                if t.is_floating_point():
                    t64, e64 = t.double(), e.double()
                    sums[0] += (t64 - e64).pow(2).sum()
                    sums[1] += (e64 - b.double()).pow(2).sum()
                    sums[2] += e64.pow(2).sum()
                else:
                    sums[3] += (t != e).sum()
            diff, change, size, mismatches = (math.sqrt(v) if i < 3 else v for i, v in enumerate(sums.tolist()))
        if mismatches or not diff <= 1e-3 * change + 1e-6 * size:
            with torch.no_grad():
                for t, e in zip(state, eager):
                    t.copy_(e)
            rel = diff / change if change else math.inf
            self.turn_off(f"self-check failed: a replayed step differs from the same step run eagerly "
                          f"(L2 difference {rel:.1e} of the step's change, {int(mismatches)} integer mismatches)")

    # ------------------------------------------------------------------ graph plumbing
    def _warmup_step(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> None:
        if self.mode != "cudagraph":
            self._eager(x, y, mask)
            return
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        side = self._side
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._eager(x, y, mask)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _refresh_lr(self) -> None:
        lrs = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        if self._neg_lr is None or len(lrs) != self._neg_lr.numel():
            if self.graphs:  # param groups changed under captured graphs: they read stale slots
                self.graphs.clear()
            self._neg_lr = torch.zeros(len(lrs), device=self.device)
            self._lrs = None
        if lrs != self._lrs:
            # FreezeOut changes lrs every step: copy without a host sync, from a fresh pinned tensor
            # (PyTorch's pinned-memory cache does not reuse it before the copy has run).
            src = torch.tensor([-lr for lr in lrs], dtype=self._neg_lr.dtype)
            on_cuda = self._neg_lr.is_cuda
            self._neg_lr.copy_(src.pin_memory() if on_cuda else src, non_blocking=on_cuda)
            self._lrs = lrs

    def _capture(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> object:
        if self._static_x is None:
            self._static_x = torch.empty_like(x)
            self._static_y = torch.empty_like(y)
        self._refresh_lr()  # allocates the lr tensor the graph reads
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates its grads from its pool
        self.captures += 1
        if self.mode == "emulate":
            return mask  # "capture" records what replay will run
        graph = torch.cuda.CUDAGraph()
        # the first capture sets up the graph pool and the kernels' workspaces: say so if it is slow
        first = slow_notice("capturing the training step as a CUDA graph (once per freezing mask)",
                            say=self.log) if self.captures == 1 else contextlib.nullcontext()
        with first, torch.cuda.graph(graph, pool=self._pool):
            self._graph_body(mask)
        if self._pool is None:
            self._pool = graph.pool()
        return graph

    def _replay(self, graph: object, x: torch.Tensor, y: torch.Tensor) -> None:
        self._refresh_lr()
        self._static_x.copy_(x)  # type: ignore[union-attr]
        self._static_y.copy_(y)  # type: ignore[union-attr]
        self.replays += 1
        if self.mode == "emulate":
            self._graph_body(graph)  # type: ignore[arg-type]
        else:
            graph.replay()  # type: ignore[attr-defined]


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    """Both runs of the self-check draw the same random numbers (dropout): a replay takes its
    Philox offset from the generator's state at replay time, like an eager kernel."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
