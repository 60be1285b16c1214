"""The training step, run eagerly or by replaying one captured CUDA graph per freezing mask.

Why graphs: small CIFAR networks are launch-bound on a modern GPU (REFERENCE.md "GPU
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

What the graph path cannot express runs eagerly: CPU, SGD with nesterov/dampening/maximize or
another optimizer, a batch of another size. A failed capture prints one line and turns the
graph path off for the rest of the run.
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

FAST_PATHS = ("off", "cudagraph")

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

    ``mode``: ``"eager"``; ``"cudagraph"`` (see the module docstring); ``"emulate"`` runs the graph
    path's exact sequence (warm-up, static buffers, ``sgd_update`` with the lr tensor, LRU cache)
    with "capture" recording the step and "replay" running it eagerly, so the graph path's logic is
    tested on CPU. ``after_backward(mask)`` runs between backward and the update (gradient
    statistics); it must only do tensor work on the device.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                 device: torch.device, mode: str = "eager",
                 after_backward: Callable[[Mask], None] | None = None, warmup: int = 3, max_graphs: int = 8,
                 log: Callable[[str], None] | None = None) -> None:
        if mode not in ("eager", "cudagraph", "emulate"):
            raise ValueError(f"mode must be eager, cudagraph or emulate, not {mode!r}")
        self.model, self.optimizer, self.loss_fn, self.device = model, optimizer, loss_fn, device
        self.after_backward = after_backward
        self.warmup, self.max_graphs = warmup, max_graphs
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.mode = mode
        if mode == "cudagraph":
            why = graph_support(optimizer, device)
            if why:
                self.log(f"fast path cudagraph off: {why}; training eagerly")
                self.mode = "eager"
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

    # ------------------------------------------------------------------ the step
    def step(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> None:
        """One training step on batch (x, y) under ``mask`` (already applied by the Freezer)."""
        if self.mode == "eager" or (self._static_x is not None and x.shape != self._static_x.shape):
            self._eager(x, y, mask)
            return
        graph = self.graphs.get(mask)
        if graph is not None:
            self.graphs.move_to_end(mask)
            self._replay(graph, x, y)
            return
        seen = self.eager_steps.get(mask, 0)
        if seen < self.warmup:
            self.eager_steps[mask] = seen + 1
            self._warmup_step(x, y, mask)
            return
        try:
            graph = self._capture(x, y, mask)
        except Exception as e:  # noqa: BLE001 - any capture failure: say so once, train on eagerly
            self.log(f"fast path cudagraph off: capture failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                     f"training eagerly")
            self.mode = "eager"
            self.graphs.clear()
            self.optimizer.zero_grad(set_to_none=True)
            self._eager(x, y, mask)
            return
        self.graphs[mask] = graph
        if len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        self._replay(graph, x, y)  # capture recorded the step without running it

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
        with torch.cuda.graph(graph, pool=self._pool):
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
