"""Check the CUDA-graph fast path against the eager trainer, in one short run (a GPU session's first call).

The fast path's tests run on CPU in an emulation of the graph path; only a GPU shows whether real
capture and replay train the same. For each model and schedule, two Trainers with the same recipe
and seed on resident synthetic data, one eager (``fast_path="off"``) and one with
``fast_path="cudagraph"``, train a few short epochs side by side; then the check compares:

* masks per epoch and FLOP accounting (``compute_saved_frac``): must be equal;
* the graph path really ran (graphs captured and replayed) and did not turn itself off (its
  self-check compares one replayed step with the same step run eagerly);
* frozen units: the prefix schedule's frozen units must be bit-identical across their frozen epochs;
* final weights: relative difference to eager (L2 over the whole state). The graph path rounds
  differently (``p + (-lr)*buf`` in two steps), and on random synthetic data a ResNet is chaotic,
  so the yardstick is a third, eager run whose initial weights are nudged by one ulp: the graph
  run must stay within 3x of that run's difference (floor 1e-5). Measured on CPU (resnet20,
  emulated graph path, lr 0.01, 28 steps): one-ulp nudge 2.7e-3, graph path 1.7e-3, a graph path
  that replays stale inputs 3.5e-2.

It also prints images/s of both paths over the timed epochs (captures included; a first look,
``benchmarks/trainer.py --variants trainer,trainer_graph,eager`` is the measurement).
Exit status 1 if a check fails. On CPU, ``--emulate`` runs the same comparison with the graph path
emulated (what the tests do), so the script itself is checked without a GPU.

    python benchmarks/fastpath_check.py --device cuda
    python benchmarks/fastpath_check.py --device cpu --emulate --models digits_cnn --steps 8
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, environment, finish_environment, median, table, write_json  # noqa: E402

import torch  # noqa: E402

from layerout.compute import synchronize  # noqa: E402
from layerout.models import MODELS, build_model  # noqa: E402
from layerout.units import units_of  # noqa: E402
from layerout.schedules import schedule_from_dict  # noqa: E402
from layerout.trainer import TrainConfig, Trainer  # noqa: E402

SCHEDULES: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "layerout": {"kind": "layerout", "v": 0.5, "v_mode": "random_epoch"},  # v expanded per model below
    "freezeout": {"kind": "freezeout", "t0": 0.5, "scale": "linear", "scale_lr": True},
    "prefix": {"kind": "prefix", "k": 2, "start_epoch": 1},
    "adaptive": {"kind": "adaptive", "check_every": 1, "threshold_mode": "percentile", "threshold": 75.0},
}
LR = 0.01  # at 0.05 a ResNet on random labels is chaotic enough to blur a bug into the rounding noise


def _schedule(name: str, k: int) -> dict[str, Any]:
    d = dict(SCHEDULES[name])
    if name == "layerout":
        d["v"] = [0.5] * k
    return d


def _trainer(model: str, sched: dict[str, Any], args: argparse.Namespace, graph: bool,
             nudge: bool = False) -> Trainer:
    bs = args.batch_size
    # about --steps full batches and a smaller last one (which the graph path runs eagerly)
    cfg = TrainConfig(model=model, dataset="synthetic", epochs=args.epochs, batch_size=bs, lr=LR, seed=0,
                      device=args.device, val_frac=0.05, synthetic_size=int((args.steps * bs + bs // 2) / 0.95),
                      fast_path="cudagraph" if graph and not args.emulate else "off")
    tr = Trainer(cfg, schedule_from_dict(sched), verbose=False)
    if nudge:
        with torch.no_grad():
            for p in tr.model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    if graph and args.emulate:
        tr.runner = tr.make_runner("emulate")
    return tr


def _frozen_snapshot(tr: Trainer) -> list[list[torch.Tensor]]:
    return [[p.detach().clone() for p in ps] for ps in tr.freezer.params]


def _rel_diff(a: Trainer, b: Trainer) -> float:
    """L2 relative difference of two runs' whole float state (per tensor would blow up on near-zero
    tensors, e.g. a conv bias before BatchNorm that only weight decay moves)."""
    pairs = [(x.double(), y.double()) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values())
             if x.is_floating_point()]
    return (sum(((x - y) ** 2).sum() for x, y in pairs).sqrt() / sum((x ** 2).sum() for x, _ in pairs).sqrt()).item()


def check(model: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    sched = _schedule(name, len(units_of(build_model(model, num_classes=10, in_channels=MODELS[model].in_channels))))
    runs = {False: _trainer(model, sched, args, graph=False), True: _trainer(model, sched, args, graph=True),
            "nudged": _trainer(model, sched, args, graph=False, nudge=True)}
    snaps: dict[Any, list] = {k: [] for k in runs}
    secs: dict[Any, list[float]] = {k: [] for k in runs}
    for epoch in range(args.epochs):
        for graph in (False, True, "nudged") if epoch % 2 == 0 else ("nudged", True, False):  # ABBA against drift
            tr = runs[graph]
            synchronize(tr.device)
            t0 = time.perf_counter()
            tr.history.append(tr.train_epoch(epoch))
            synchronize(tr.device)
            secs[graph].append(time.perf_counter() - t0)
            tr.epoch += 1
            snaps[graph].append(_frozen_snapshot(tr))
    eager, fast = runs[False], runs[True]
    masks = [h["frozen_units"] for h in fast.history]
    problems = []
    if masks != [h["frozen_units"] for h in eager.history]:
        problems.append("masks differ")
    if fast.history[-1]["compute_saved_frac"] != eager.history[-1]["compute_saved_frac"]:
        problems.append("compute_saved_frac differs")
    if fast.runner.mode == "eager" or fast.runner.captures == 0 or fast.runner.replays == 0:
        problems.append(f"graph path did not run (mode {fast.runner.mode}, {fast.runner.captures} captures"
                        f"{', ' + fast.runner.off_reason if fast.runner.off_reason else ''})")
    frozen_ok = True
    stepwise = fast.schedule.stepwise  # masks are end-of-epoch states; FreezeOut's can change mid-epoch
    for e in range(1, args.epochs):  # a unit frozen all through epoch e is bit-identical from end of e-1 to end of e
        for i, f in enumerate(masks[e]):
            if f == "1" and (not stepwise or masks[e - 1][i] == "1") and not all(torch.equal(a, b) for a, b in zip(snaps[True][e - 1][i], snaps[True][e][i])):
                frozen_ok = False
    if not frozen_ok:
        problems.append("a frozen unit changed under the graph path")
    worst, chaos = _rel_diff(eager, fast), _rel_diff(eager, runs["nudged"])
    if not worst <= max(3 * chaos, 1e-5):
        problems.append(f"weights differ: relative difference {worst:.2e} > 3 x {chaos:.2e} (one-ulp nudge)")
    n_img = fast.data.train_x.shape[0]
    timed = slice(1, None)  # epoch 0 holds the warm-up steps and first captures
    return {"model": model, "schedule": name, "masks": masks, "captures": fast.runner.captures,
            "replays": fast.runner.replays, "rel_weight_diff": worst, "rel_weight_diff_one_ulp_nudge": chaos, "frozen_bit_identical": frozen_ok,
            "eager_images_per_s": median(n_img / s for s in secs[False][timed]),
            "graph_images_per_s": median(n_img / s for s in secs[True][timed]),
            "ok": not problems, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="resnet20,mnist_shallow,vgg16")
    ap.add_argument("--schedules", default=",".join(SCHEDULES))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30, help="full batches per epoch (a smaller one follows)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--emulate", action="store_true", help="CPU: emulate the graph path (no CUDA needed)")
    ap.add_argument("--json", default=None, help="output (default runs/benchmarks/fastpath-check-<device>.json)")
    args = ap.parse_args(argv)
    if args.epochs < 3:
        ap.error("--epochs: at least 3 (the prefix schedule freezes from epoch 1; epoch 0 is not timed)")
    env = environment(args.device)
    rows = []
    for model in args.models.split(","):
        for name in args.schedules.split(","):
            print(f"[{model}] {name} ...", flush=True)
            try:
                rows.append(check(model, name, args))
            except Exception as e:  # noqa: BLE001 - a crash is a failed check; go on with the others
                rows.append({"model": model, "schedule": name, "ok": False,
                             "problems": [f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"]})
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    finish_environment(env)
    print(table([[r["model"], r["schedule"], " ".join(r.get("masks", [])), r.get("captures"), r.get("replays"),
                  r.get("rel_weight_diff"), r.get("rel_weight_diff_one_ulp_nudge"), r.get("frozen_bit_identical"), r.get("eager_images_per_s"),
                  r.get("graph_images_per_s"), "ok" if r["ok"] else "FAIL: " + "; ".join(r["problems"])]
                 for r in rows],
                ["model", "schedule", "masks", "captures", "replays", "rel weight diff", "same, 1-ulp nudge", "frozen bit-identical",
                 "eager img/s", "graph img/s", "result"]))
    out = write_json(args.json or OUT_DIR / f"fastpath-check-{args.device.split(':')[0]}"
                     f"{'-emulated' if args.emulate else ''}.json", {"environment": env, "rows": rows})
    print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
