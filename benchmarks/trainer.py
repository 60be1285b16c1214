"""Trainer throughput next to a plain eager PyTorch loop, and how much of a mask's FLOP saving
shows up as step time ("realization").

Part 1, throughput (images/s, unfrozen): for each model, on synthetic data of the model's input
shape (``MODELS[name].in_channels`` x ``input_size``^2, 10 classes), resident on the device:

* ``trainer``      layerout's ``Trainer.train_epoch`` (schedule "none", ``fast_path="off"``: every
                   step eager): the timed window is the
                   trainer's own (``ledger.train_time_s``): batching, on-device augmentation,
                   forward, backward, SGD step, loss accumulation. Evaluation is outside it.
* ``eager``        the reference, written here: the same model (same init), SGD(lr 0.05,
                   momentum 0.9, weight decay 5e-4), the same batch size, the same resident data,
                   the same shuffling and the same batched augmentation (pad-4 crop + flip via
                   ``layerout.augment.augment_batch``), one ``loss.backward(); opt.step()`` per step.
* ``eager_noaug``  the reference without augmentation (what augmentation costs).
* ``trainer_graph`` (CUDA, in the default variants there) the trainer with ``fast_path="cudagraph"``,
                   what ``fast_path="auto"``, the default, runs on CUDA (layerout/fastpath.py:
                   one captured graph per mask; its eager warm-up steps, the capture and the
                   self-check fall in the untimed warm-up epoch).
* opt-in (``--variants``): ``channels_last``, ``bf16`` (autocast), ``compile``
  (``torch.compile(model)``), ``compile_ro`` (mode="reduce-overhead", CUDA graphs via inductor),
  ``cudagraph`` (the whole step - forward, backward, SGD - captured in one CUDA graph; augmentation
  runs eagerly outside it and is copied into the static input). Each is the eager reference with
  one change, so the table says what each means of speeding up the trainer would buy before it goes into the
  library. A variant that fails is recorded with its error and the run goes on.

All variants of a model run interleaved (ABBA order per repeat) so that drift and other load on
the machine hit them alike; the figure is the median over ``--repeats``.

Part 2, masks: for each mask (none, first half, second half, every other unit [odd units
frozen], all but last, three draws of the paper's efreeze vector), a plain loop on one fixed
resident batch (no augmentation: a constant cost would only blur the ratio) with ``requires_grad``
set by ``layerout.freezer.Freezer``; per repeat and mask, ``--mask-warmup`` untimed steps then
``--mask-steps`` timed steps (CUDA synchronized). Masks are interleaved, ABBA, per repeat.

* FLOP ratio = ``step_flops(mask) / step_flops(none)`` (``layerout.compute``, autograd's real ops)
* time ratio = median over repeats of (step time of mask / step time of none in the same repeat)
* realization = (1 - time ratio) / (1 - FLOP ratio); n/a where FLOPs saved < 2 %.
  "efreeze (pooled)" = (1 - mean time ratio) / (1 - mean FLOP ratio) over the three draws.

``--mask-modes eager,cudagraph`` (CUDA) also times every mask with one captured graph per mask.

On CUDA the peak memory of a trial (``torch.cuda.max_memory_allocated`` over building the
Trainer, its data and a warm-up epoch) is reported per model.

    python benchmarks/trainer.py --device cpu --quick
    python benchmarks/trainer.py --report benchmarks/results/trainer-cpu.json   # tables of stored results
    python benchmarks/trainer.py --device cuda --variants trainer,trainer_graph,eager,eager_noaug,channels_last,bf16,compile,cudagraph --mask-modes eager,cudagraph
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, environment, finish_environment, median, table, write_json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from layerout.augment import augment_batch  # noqa: E402
from layerout.compute import FlopCache, synchronize  # noqa: E402
from layerout.freezer import Freezer  # noqa: E402
from layerout.models import MODELS, build_model  # noqa: E402
from layerout.units import units_of  # noqa: E402
from layerout.schedules import FreezeState, LayerOutSchedule, paper_vectors, schedule_from_dict  # noqa: E402
from layerout.trainer import TrainConfig, Trainer  # noqa: E402

ALL_MODELS = ["mnist_shallow", "vgg16", "resnet20", "resnet110", "digits_cnn"]
HEAVY = {"vgg16", "resnet110", "resnet56"}
QUICK_CPU_MODELS = ["mnist_shallow", "resnet20", "digits_cnn"]  # vgg16/resnet110 take ~1-2 s a step on 2 cores
ALL_VARIANTS = ["trainer", "trainer_graph", "eager", "eager_noaug", "channels_last", "bf16", "compile", "compile_ro", "cudagraph"]
DEFAULT_VARIANTS = ["trainer", "eager", "eager_noaug"]  # CUDA: and trainer_graph
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4
VAL_FRAC = 0.001  # the trainer evaluates its validation split every epoch: keep it to a few images

# the GPU targets
TARGET_SPEEDUP_GPU = {"resnet110": 3.0, "vgg16": 1.5}
TARGET_SPEEDUP_CPU = 1.0
TARGET_PREFIX_REALIZATION = 0.8
TARGET_EFREEZE_REALIZATION = 0.6
PREFIX_MASKS = ("first half", "all but last")


# ----------------------------------------------------------------------------- throughput
class Variant:
    """One way of training the model; ``run()`` returns (wall seconds, process CPU seconds) of its steps."""

    name = ""
    error: str | None = None

    def warmup(self) -> None: ...

    def run(self) -> tuple[float, float]: ...


class TrainerVariant(Variant):
    name = "trainer"

    def __init__(self, model: str, bs: int, steps: int, repeats: int, device: str, augment: bool, seed: int,
                 fast_path: str = "off"):
        if fast_path != "off":
            self.name = "trainer_graph"
        spec = MODELS[model]
        size = math.ceil(steps * bs / (1 - VAL_FRAC)) + bs
        self.cfg = TrainConfig(model=model, dataset="synthetic", epochs=repeats + 2, batch_size=bs, lr=LR,
                               momentum=MOMENTUM, weight_decay=WD, seed=seed, device=device, val_frac=VAL_FRAC,
                               augment=augment, max_train_batches=steps, synthetic_size=size,
                               fast_path=fast_path)
        self.trainer = Trainer(self.cfg, schedule_from_dict({"kind": "none"}), out_dir=None, verbose=False)
        assert self.trainer.steps_per_epoch == steps, (self.trainer.steps_per_epoch, steps)
        assert len(self.trainer.data.train_x) >= steps * bs
        self.epoch = 0
        self.shape = (spec.in_channels, spec.input_size, spec.input_size)

    def _epoch(self) -> tuple[float, float]:
        before = self.trainer.ledger.train_time_s
        c0 = time.process_time()
        self.trainer.train_epoch(self.epoch)
        cpu = time.process_time() - c0
        self.epoch += 1
        return self.trainer.ledger.train_time_s - before, cpu

    def warmup(self) -> None:
        self._epoch()

    def run(self) -> tuple[float, float]:
        return self._epoch()


class EagerVariant(Variant):
    """The plain eager reference loop, optionally with one change (channels_last, bf16, compile, cudagraph)."""

    def __init__(self, name: str, model_name: str, data: Any, bs: int, steps: int, device: torch.device,
                 augment: bool, seed: int, warmup_steps: int):
        self.name, self.bs, self.steps, self.device, self.warmup_steps = name, bs, steps, device, warmup_steps
        self.x, self.y = data.train_x, data.train_y
        self.aug = data.augment if augment and name != "eager_noaug" else None
        torch.manual_seed(seed)
        self.model = build_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
        self.model.train()
        self.channels_last = name == "channels_last"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.fwd: Callable[[torch.Tensor], torch.Tensor] = self.model
        if name == "compile":
            self.fwd = torch.compile(self.model)
        elif name == "compile_ro":
            self.fwd = torch.compile(self.model, mode="reduce-overhead")
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if name == "bf16" \
            else contextlib.nullcontext
        self.graph: GraphStep | None = None
        self.epoch = 0

    def _batches(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.gen, device=self.device)
        for s in range(self.steps):
            idx = order[s * self.bs:(s + 1) * self.bs]
            xb = augment_batch(self.x[idx], self.gen, self.aug)
            yield xb, self.y[idx]

    def _train(self) -> None:
        if self.name == "cudagraph" and self.graph is None:
            xb, yb = next(iter(self._batches()))
            self.graph = GraphStep(self.model, self.opt, xb, yb)
        for xb, yb in self._batches():
            if self.graph is not None:
                self.graph(xb, yb)
                continue
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                loss = F.cross_entropy(self.fwd(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def warmup(self) -> None:
        steps, self.steps = self.steps, self.warmup_steps
        try:
            self._train()
        finally:
            self.steps = steps
        synchronize(self.device)

    def run(self) -> tuple[float, float]:
        synchronize(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        self._train()
        synchronize(self.device)
        return time.perf_counter() - t0, time.process_time() - c0


class GraphStep:
    """One SGD training step (forward, loss, backward, optimizer) captured as a CUDA graph.

    The recipe of PyTorch's "whole network capture": warm up a few steps on a side stream (this
    also creates the momentum buffers outside the graph's pool), then capture with grads set to
    None so the graph allocates them. Frozen parameters (requires_grad off when captured) get no
    grad, so the captured ``opt.step()`` skips them: no update, no decay, momentum kept - the
    same semantics as eager. One graph per distinct mask; the lr is baked in (constant here).
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 warmup: int = 3):
        self.static_x, self.static_y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(self.static_x), self.static_y).backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = F.cross_entropy(model(self.static_x), self.static_y)
            self.loss.backward()
            opt.step()

    def __call__(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        if x is not None:
            self.static_x.copy_(x, non_blocking=True)
            self.static_y.copy_(y, non_blocking=True)
        self.graph.replay()


def measure_throughput(model: str, bs: int, steps: int, repeats: int, warmup_steps: int, device: torch.device,
                       variants: list[str], augment: bool, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_size": bs, "steps": steps, "repeats": repeats,
                           "augmentation": "pad-4 random crop + horizontal flip, batched on the device"
                           if augment else "none", "variants": {}}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    runners: list[Variant] = []
    tv = TrainerVariant(model, bs, steps, repeats, str(device), augment, seed)
    tv.warmup()
    if device.type == "cuda":
        synchronize(device)
        out["peak_mem_trial_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["data_mib"] = round(sum(t.numel() * t.element_size() for t in (
            tv.trainer.data.train_x, tv.trainer.data.val_x, tv.trainer.data.test_x)) / 2**20, 1)
    if "trainer" in variants:
        runners.append(tv)
    for name in variants:
        if name == "trainer":
            continue
        if name in ("cudagraph", "compile_ro", "trainer_graph") and device.type != "cuda":
            out["variants"][name] = {"skipped": "CUDA only"}
            continue
        try:
            if name == "trainer_graph":  # the trainer with its CUDA-graph fast path (layerout/fastpath.py)
                v = TrainerVariant(model, bs, steps, repeats, str(device), augment, seed, fast_path="cudagraph")
            else:
                v = EagerVariant(name, model, tv.trainer.data, bs, steps, device, augment, seed, warmup_steps)
            t0 = time.perf_counter()
            v.warmup()
            out["variants"][name] = {"warmup_s": round(time.perf_counter() - t0, 2)}
            runners.append(v)
        except Exception as e:  # noqa: BLE001 - record and go on
            out["variants"][name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
            traceback.print_exc(limit=3)
    times: dict[str, list[tuple[float, float]]] = {v.name: [] for v in runners}
    for r in range(repeats):
        for v in (runners if r % 2 == 0 else runners[::-1]):
            if v.error:
                continue
            try:
                times[v.name].append(v.run())
            except Exception as e:  # noqa: BLE001
                v.error = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                traceback.print_exc(limit=3)
    n_img = steps * bs
    for v in runners:
        rec = out["variants"].setdefault(v.name, {})
        if v.error:
            rec["error"] = v.error
        walls = [w for w, _ in times[v.name]]
        cpus = [c for _, c in times[v.name]]
        rec["images_per_s"] = [round(n_img / w, 1) for w in walls]
        rec["median_images_per_s"] = median(n_img / w for w in walls)
        rec["median_step_ms"] = 1000 * median(walls) / steps if walls else None
        # images per process-CPU-second: less sensitive than wall-clock to other work on a shared CPU
        rec["median_images_per_cpu_s"] = median(n_img / c for c in cpus if c > 0)
    base = times.get("eager")
    for v in runners:
        rec = out["variants"][v.name]
        mine = times[v.name]
        if base and mine and v.name != "eager":
            # paired: the ratio within each repeat (adjacent in time), then the median
            rec["vs_eager"] = median(b[0] / m[0] for m, b in zip(mine, base))
            rec["vs_eager_cpu_time"] = median(b[1] / m[1] for m, b in zip(mine, base) if m[1] > 0)
        elif v.name == "eager" and mine:
            rec["vs_eager"] = rec["vs_eager_cpu_time"] = 1.0
    del runners, tv
    return out


# ----------------------------------------------------------------------------- masks
def mask_set(k: int, seed: int) -> list[tuple[str, tuple[bool, ...]]]:
    half = k // 2
    masks = [
        ("none", tuple([False] * k)),
        ("first half", tuple(i < half for i in range(k))),
        ("second half", tuple(i >= half for i in range(k))),
        ("every other unit", tuple(i % 2 == 1 for i in range(k))),
        ("all but last", tuple(i < k - 1 for i in range(k))),
    ]
    sched = LayerOutSchedule(v=paper_vectors(k)["efreeze"], v_mode="manual", seed=seed).bind(k, 3, 1, seed=seed)
    masks += [(f"efreeze draw {e + 1}", sched.state(e).frozen) for e in range(3)]
    return [(n, m) for n, m in masks if not (m and all(m))]


def measure_masks(model_name: str, bs: int, steps: int, warmup: int, repeats: int, device: torch.device,
                  mode: str, seed: int) -> dict[str, Any]:
    spec = MODELS[model_name]
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=10, in_channels=spec.in_channels).to(device)
    model.train()
    units = units_of(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    k = len(units)
    freezer = Freezer(model, opt, units, schedule_from_dict({"kind": "none"}).bind(k, 1, 1, seed), bn_frozen="train")
    g = torch.Generator().manual_seed(seed)
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    x = torch.randn(bs, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (bs,), generator=g).to(device)
    flops = FlopCache(model, freezer.params, x[:2], y[:2])
    masks = mask_set(k, seed)
    distinct = list(dict.fromkeys(m for _, m in masks))
    unfrozen = distinct[0]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    graphs: dict[tuple[bool, ...], GraphStep] = {}
    capture_s: dict[tuple[bool, ...], float] = {}

    def eager_step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def steps_of(mask: tuple[bool, ...], n: int) -> tuple[float, float]:
        freezer.apply(FreezeState(frozen=mask), force=True)
        if mode == "cudagraph":
            if mask not in graphs:
                t0 = time.perf_counter()
                graphs[mask] = GraphStep(model, opt, x, y)
                synchronize(device)
                capture_s[mask] = time.perf_counter() - t0
            step = graphs[mask]
        else:
            step = eager_step
        for _ in range(warmup):
            step()
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
        synchronize(device)
        return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n

    times: dict[tuple[bool, ...], list[tuple[float, float]]] = {m: [] for m in distinct}
    for r in range(repeats):
        for m in (distinct if r % 2 == 0 else distinct[::-1]):
            times[m].append(steps_of(m, steps))
    freezer.apply(FreezeState(frozen=unfrozen), force=True)
    base_flops = flops(unfrozen)
    rows = []
    for name, m in masks:
        # paired: the ratio to the unfrozen step of the same repeat, then the median
        tr = median(t[0] / t0[0] for t, t0 in zip(times[m], times[unfrozen]))
        cr = median(t[1] / t0[1] for t, t0 in zip(times[m], times[unfrozen]) if t0[1] > 0)
        fr = flops(m) / base_flops
        saved = 1 - fr
        rows.append({
            "mask": name, "frozen": "".join("1" if f else "0" for f in m), "frozen_units": sum(m),
            "flop_ratio": fr, "time_ratio": tr, "step_ms": 1000 * median(t[0] for t in times[m]),
            "step_ms_all": [round(1000 * t[0], 3) for t in times[m]],
            "realization": (1 - tr) / saved if saved >= 0.02 else None,
            "cpu_time_ratio": cr,
            "realization_cpu_time": (1 - cr) / saved if saved >= 0.02 and cr is not None else None,
            "gflop_per_step": flops(m) * bs / 1e9,
            **({"capture_s": round(capture_s[m], 3)} if m in capture_s else {}),
        })
    ef = [r for r in rows if r["mask"].startswith("efreeze")]
    mean_fr = sum(r["flop_ratio"] for r in ef) / len(ef)
    mean_tr = sum(r["time_ratio"] for r in ef) / len(ef)
    mean_cr = sum(r["cpu_time_ratio"] for r in ef) / len(ef)
    per_draw = [r["realization"] for r in ef if r["realization"] is not None]
    out = {"mode": mode, "units": k, "batch_size": bs, "steps": steps, "warmup": warmup, "repeats": repeats,
           "rows": rows,
           "efreeze_pooled": {"flop_ratio": mean_fr, "time_ratio": mean_tr,
                              "realization": (1 - mean_tr) / (1 - mean_fr) if 1 - mean_fr >= 0.02 else None,
                              "mean_of_draws": sum(per_draw) / len(per_draw) if per_draw else None,
                              "cpu_time_ratio": mean_cr,
                              "realization_cpu_time": (1 - mean_cr) / (1 - mean_fr) if 1 - mean_fr >= 0.02 else None}}
    if device.type == "cuda":
        out["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    graphs.clear()
    return out


# ----------------------------------------------------------------------------- reporting
def targets(results: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    checks = []
    for model, res in results.items():
        tp = res.get("throughput", {}).get("variants", {})
        sp = tp.get("trainer", {}).get("vs_eager")
        if device.type == "cuda":
            for name in ("trainer", "trainer_graph"):
                g = tp.get(name, {}).get("vs_eager")
                if model in TARGET_SPEEDUP_GPU and name in tp:
                    checks.append({"model": model, "what": f"{name} / eager images/s (GPU)",
                                   "target": TARGET_SPEEDUP_GPU[model], "value": g,
                                   "met": g is not None and g >= TARGET_SPEEDUP_GPU[model]})
        else:
            checks.append({"model": model, "what": "trainer / eager images/s (CPU: not slower)",
                           "target": TARGET_SPEEDUP_CPU, "value": sp,
                           # within 3 % counts as "not slower": the repeat-to-repeat noise on a shared 2-core VM
                           "met": sp is not None and sp >= 0.97 * TARGET_SPEEDUP_CPU})
        for mres in res.get("masks", []):
            if model not in ("vgg16", "resnet110"):
                continue
            for row in mres["rows"]:
                if row["mask"] in PREFIX_MASKS:
                    checks.append({"model": model, "what": f"realization, {row['mask']} ({mres['mode']})",
                                   "target": TARGET_PREFIX_REALIZATION, "value": row["realization"],
                                   "met": row["realization"] is not None and row["realization"] >= TARGET_PREFIX_REALIZATION})
            ef = mres["efreeze_pooled"]["realization"]
            checks.append({"model": model, "what": f"realization, efreeze pooled ({mres['mode']})",
                           "target": TARGET_EFREEZE_REALIZATION, "value": ef,
                           "met": ef is not None and ef >= TARGET_EFREEZE_REALIZATION})
    return checks


def print_report(payload: dict[str, Any]) -> None:
    env = payload["environment"]
    cpu = not str(env["device"]).startswith("cuda")
    print(f"\n== trainer benchmark: {env['device_name']}  torch {env['torch']}  python {env['python']}  "
          f"{env['date']}  load {env.get('loadavg_start')} -> {env.get('loadavg_end')}")
    variants = payload["settings"]["variants"]
    rows = []
    for model, res in payload["models"].items():
        tp = res.get("throughput")
        if not tp:
            continue
        v = tp["variants"]
        row = [model, tp["batch_size"], tp["steps"]]
        for name in variants:
            rec = v.get(name, {})
            row.append("err" if "error" in rec else "skip" if "skipped" in rec else rec.get("median_images_per_s"))
        row.append(v.get("trainer", {}).get("vs_eager"))
        if cpu:
            row.append(v.get("trainer", {}).get("vs_eager_cpu_time"))
        else:
            row.append(tp.get("peak_mem_trial_mib"))
        rows.append(row)
    if rows:
        header = ["model", "batch", "steps", *[f"{n} img/s" for n in variants], "trainer/eager"]
        header.append("trainer/eager (CPU time)" if cpu else "peak MiB/trial")
        print("\nThroughput, unfrozen (medians of repeats; ratios paired per repeat):")
        print(table(rows, header))
    for model, res in payload["models"].items():
        for mres in res.get("masks", []):
            print(f"\nMasks: {model}, batch {mres['batch_size']}, {mres['units']} units, mode {mres['mode']}, "
                  f"{mres['steps']} steps x {mres['repeats']} repeats"
                  + (f", peak {mres['peak_mem_mib']} MiB" if "peak_mem_mib" in mres else ""))
            rows = []
            for r in mres["rows"]:
                frozen = r["frozen"] if len(r["frozen"]) <= 20 else f"{r['frozen_units']}/{mres['units']} frozen"
                row = [r["mask"], frozen, r["flop_ratio"], r["time_ratio"], r["step_ms"], r["realization"]]
                if cpu:
                    row += [r["cpu_time_ratio"], r["realization_cpu_time"]]
                rows.append(row)
            ef = mres["efreeze_pooled"]
            row = ["efreeze (pooled)", "", ef["flop_ratio"], ef["time_ratio"], None, ef["realization"]]
            if cpu:
                row += [ef.get("cpu_time_ratio"), ef.get("realization_cpu_time")]
            rows.append(row)
            header = ["mask", "frozen", "FLOP ratio", "time ratio", "step ms", "realization"]
            if cpu:
                header += ["CPU-time ratio", "realization (CPU time)"]
            print(table(rows, header))
    if payload.get("targets"):
        print("\nTargets:")
        print(table([[c["model"], c["what"], c["target"], c["value"], "yes" if c["met"] else "NO"]
                     for c in payload["targets"]], ["model", "check", "target", "value", "met"]))


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--models", default=None,
                    help=f"comma list (default {','.join(ALL_MODELS)}; --quick on CPU: {','.join(QUICK_CPU_MODELS)})")
    ap.add_argument("--batch-size", type=int, default=128, help="batch size of every model but digits_cnn (128)")
    ap.add_argument("--digits-batch-size", type=int, default=64, help="digits_cnn's batch (64, the demo's)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per repeat (default: cuda 50, cpu 20; --quick: 5, heavy models 2)")
    ap.add_argument("--heavy-steps", type=int, default=None,
                    help="steps for vgg16/resnet110 (default: cuda --steps; cpu 3, --quick 2: ~2 s a step on 2 cores)")
    ap.add_argument("--mask-steps", type=int, default=None, help="timed steps per mask and repeat (default --steps)")
    ap.add_argument("--mask-warmup", type=int, default=None, help="untimed steps before each mask's timing "
                                                                  "(default: cuda 3, cpu 1)")
    ap.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps of each eager variant "
                                                                   "(default: cuda 10, cpu 2)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats; medians are reported (default 5; --quick 3)")
    ap.add_argument("--variants", default=None,
                    help=f"throughput variants, comma list of {','.join(ALL_VARIANTS)} (default "
                         f"{','.join(DEFAULT_VARIANTS)}, and trainer_graph on CUDA)")
    ap.add_argument("--mask-modes", default="eager", help="eager and/or cudagraph (default eager)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-masks", action="store_true")
    ap.add_argument("--no-augment", action="store_true", help="no augmentation for the trainer and the reference")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="small settings (5 steps, 3 repeats; on CPU only mnist_shallow, resnet20, digits_cnn unless "
                         "--models says otherwise, vgg16/resnet110 then with 2 steps): ~2 minutes on 2 CPU cores")
    ap.add_argument("--json", default=None, help="output (default runs/benchmarks/trainer-<device>[-quick].json)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.models is None:
        args.models = ",".join(QUICK_CPU_MODELS if args.quick and not cuda else ALL_MODELS)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; allowed: {', '.join(MODELS)}")
    if args.variants is None:
        args.variants = ",".join(DEFAULT_VARIANTS + ["trainer_graph"] * cuda)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in ALL_VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; allowed: {', '.join(ALL_VARIANTS)}")
    args.mask_modes = [v.strip() for v in args.mask_modes.split(",") if v.strip()]
    if any(m not in ("eager", "cudagraph") for m in args.mask_modes):
        ap.error("--mask-modes: allowed eager, cudagraph")
    if args.device != "cpu" and not (cuda and torch.cuda.is_available()):
        ap.error(f"--device {args.device}: no CUDA GPU here; use --device cpu")
    if args.steps is None:
        args.steps = 5 if args.quick else (50 if cuda else 20)
    if args.heavy_steps is None:
        args.heavy_steps = args.steps if cuda else (2 if args.quick else 3)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.mask_warmup is None:
        args.mask_warmup = 3 if cuda else 1
    if args.warmup_steps is None:
        args.warmup_steps = 10 if cuda else 2
    if args.json is None:
        dev = "cuda" if cuda else "cpu"
        args.json = str(OUT_DIR / f"trainer-{dev}{'-quick' if args.quick else ''}.json")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--report"]:  # re-print the tables of stored results (Markdown-ready)
        for path in argv[1:]:
            payload = json.loads(Path(path).read_text())
            if payload.get("benchmark") != "trainer":
                print(f"{path}: not a trainer.py result (benchmark {payload.get('benchmark')!r}); skipped")
                continue
            print_report(payload)
        return 0
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = environment(args.device)
    load = env.get("loadavg_start") or [0.0]
    if device.type == "cpu" and torch.get_num_threads() > 1 and load[0] > 0.5 * (env["cpu_count"] or 1):
        print(f"note: load average {load[0]:.1f} on {env['cpu_count']} cores: other work is running; with "
              f"{torch.get_num_threads()} threads OpenMP spin-waiting can make wall-clock numbers meaningless "
              "(10x). Consider --threads 1.", flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    payload: dict[str, Any] = {"benchmark": "trainer", "environment": env, "settings": settings, "models": {}}
    t_all = time.perf_counter()
    for model in args.models:
        bs = args.digits_batch_size if model == "digits_cnn" else args.batch_size
        steps = args.heavy_steps if model in HEAVY else args.steps
        mask_steps = args.mask_steps or steps
        res: dict[str, Any] = {}
        payload["models"][model] = res
        t0 = time.perf_counter()
        if not args.skip_throughput:
            print(f"[{model}] throughput: batch {bs}, {steps} steps x {args.repeats} repeats, "
                  f"variants {','.join(args.variants)}", flush=True)
            res["throughput"] = measure_throughput(model, bs, steps, args.repeats, args.warmup_steps, device,
                                                   args.variants, not args.no_augment, args.seed)
        if not args.skip_masks:
            res["masks"] = []
            for mode in args.mask_modes:
                if mode == "cudagraph" and device.type != "cuda":
                    print(f"[{model}] masks: mode cudagraph skipped (CUDA only)")
                    continue
                print(f"[{model}] masks ({mode}): batch {bs}, {mask_steps} steps x {args.repeats} repeats", flush=True)
                try:
                    res["masks"].append(measure_masks(model, bs, mask_steps, args.mask_warmup, args.repeats,
                                                      device, mode, args.seed))
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc(limit=3)
                    res.setdefault("mask_errors", {})[mode] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        res["seconds"] = round(time.perf_counter() - t0, 1)
        # write as we go: a long run that is cut off keeps what it measured
        finish_environment(env)
        payload["targets"] = targets(payload["models"], device)
        write_json(args.json, payload)
    env["total_s"] = round(time.perf_counter() - t_all, 1)
    finish_environment(env)
    payload["targets"] = targets(payload["models"], device)
    path = write_json(args.json, payload)
    print_report(payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
