"""The LayerOut trainer: SGD training of a registered model under a freezing schedule.

One ``Trainer`` is one run: it loads the data onto the device, builds the model, and trains
epoch by epoch while a ``Freezer`` applies the schedule's masks. After every epoch it computes
the metrics of ``layerout.metrics``, writes ``checkpoint.pt`` and ``epochs.csv`` into ``out_dir`` and calls the
callbacks (the search reports through them). ``Trainer.resume(out_dir)`` continues a run and
ends with the same weights as an uninterrupted one: data order, augmentation and LayerOut draws
are pure functions of (seed, epoch), and model, optimizer, schedule and accounting state are
checkpointed.

Speed: data stays on the device, augmentation is batched, and the loop never synchronizes with
the host inside an epoch (loss and accuracy are summed on the device and read once).
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from layerout import userland
from layerout.arithmetic import computing_with, current_threads, resolve_device
from layerout.augment import augment_batch
from layerout.compute import ComputeLedger, FlopCache, clock_for, read_clock, synchronize, time_unfrozen_steps
from layerout.compute import saved_frac
# the recipe lives in layerout.config (no torch); TrainConfig and LOCAL_FIELDS stay importable from here
from layerout.config import ARITHMETIC_FIELDS, LOCAL_FIELDS, TrainConfig, lr_at  # noqa: F401
from layerout.data import DataSplits, DatasetSplits, as_splits, is_user_dataset, load_data
from layerout.errors import UserError
from layerout.fastpath import StepRunner
from layerout.files import atomic_write, write_csv
from layerout.freezer import Freezer, resolve_bn_frozen
from layerout.metrics import EXTRA_METRICS, METRICS
from layerout.models import MODELS, build_model, count_params, is_user_model
from layerout.policy import Policy, provenance
from layerout.progress import JobProgress, format_seconds, is_terminal, slow_notice, step_bar
from layerout.preflight import check_forward, is_user_code
from layerout.schedules import Schedule, schedule_from_dict
from layerout.units import unit_origin, unit_param_counts, units_of

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "layerout-checkpoint"

Callback = Callable[[dict[str, Any], "Trainer"], Any]


class Trainer:
    """One training run; see the module docstring. ``fit()`` returns the final metrics."""

    def __init__(self, cfg: TrainConfig, schedule: Schedule, out_dir: str | os.PathLike | None = None,
                 callbacks: list[Callback] | None = None, verbose: bool = True,
                 data: Any = None, model: nn.Module | Callable[..., nn.Module] | None = None,
                 progress_bar: bool | None = None) -> None:
        """``data``: splits already loaded, or your own data (a ``layerout.data.UserData`` or a tuple
        it accepts) instead of loading ``cfg.dataset``. ``model``: your own model (an ``nn.Module``,
        trained in place) or what builds it (a class or a callable taking ``num_classes`` and/or
        ``in_channels``) instead of building ``cfg.model``; ``cfg.model`` then only names it.
        ``verbose``: one line per epoch (and a note when loading the data takes over a second);
        ``progress_bar``: a bar over the steps of a long epoch (None: when verbose and stdout is a
        terminal; the trials of a search are quiet)."""
        # bn_frozen "auto" becomes the schedule's choice and threads the count torch uses here, so
        # that checkpoints, summaries and policies record what ran
        cfg = replace(cfg, bn_frozen=resolve_bn_frozen(cfg.bn_frozen, schedule), threads=cfg.threads or current_threads())
        self.cfg, self.schedule = cfg, schedule
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks or [])
        self.verbose = verbose
        self.progress_bar = verbose and is_terminal(sys.stdout) if progress_bar is None else bool(progress_bar)
        self.device = resolve_device(cfg.device)
        user_data = data is not None and not isinstance(data, (DataSplits, DatasetSplits))
        if data is None:
            spec = MODELS.get(cfg.model)
            shape = (spec.in_channels, spec.input_size, spec.input_size) if spec else (3, 32, 32)
            with slow_notice(f"loading dataset {cfg.dataset}", say=self._log if verbose else None):
                data = load_data(
                    cfg.dataset, device=self.device, val_frac=cfg.val_frac, seed=cfg.seed, data_dir=cfg.data_dir,
                    download=cfg.download, synthetic_shape=shape, synthetic_size=cfg.synthetic_size,
                    random_erasing=cfg.random_erasing, image_size=cfg.image_size, workers=cfg.data_workers)
        self.data = as_splits(data, cfg.dataset, device=self.device, val_frac=cfg.val_frac, seed=cfg.seed,
                              workers=cfg.data_workers)
        torch.manual_seed(cfg.seed)
        model_given = model is not None
        if model is None:
            model = build_model(cfg.model, num_classes=self.data.num_classes, in_channels=self.data.in_channels)
        elif not isinstance(model, nn.Module):
            model = userland.model_from(model, cfg.model, self.data.num_classes, self.data.in_channels)
        self.model = model.to(self.device)
        try:
            self.units = units_of(self.model, cfg.units)
        except ValueError as e:  # prefixes that do not fit the model
            raise UserError(f"units: {e}") from None
        self.units_origin = unit_origin(self.model, cfg.units)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        n_train = self.data.n_train
        self.steps_per_epoch = -(-n_train // cfg.batch_size)
        if cfg.max_train_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_train_batches)
        schedule.bind(len(self.units), cfg.epochs, self.steps_per_epoch, seed=cfg.seed)
        self.freezer = Freezer(self.model, self.optimizer, self.units, schedule, bn_frozen=cfg.bn_frozen)
        px, py = self.data.head(min(2, n_train))
        px, py = px.to(self.device), py.to(self.device)
        # the user's model or data: their failures are UserErrors (here on the probe batch, in one line;
        # later at the step that failed, _user_failure)
        self.user_code = bool(model_given or user_data or is_user_code(cfg.model, cfg.dataset))
        if self.user_code:
            check_forward(self.model, px, py, self.data.num_classes, cfg.model, cfg.dataset)
        # a built-in model is named completely by these: its FLOPs per mask are probed once per
        # process (a search's reused worker), not once per trial; your own model's are probed per run
        shared = None if self.user_code else (
            cfg.model, self.data.num_classes, self.data.in_channels, tuple(px.shape[1:]), str(px.dtype),
            self.device.type, tuple((u.name, tuple(u.prefixes)) for u in self.units),
            tuple((n, tuple(p.shape), str(p.dtype)) for n, p in self.model.named_parameters()))
        self.flops = FlopCache(self.model, self.freezer.params, px, py, shared_key=shared)
        if self.user_code:  # the user's model in eval mode (the FLOP count runs it so) fails here, in one line
            try:
                self.flops((False,) * len(self.units))
            except Exception as e:  # noqa: BLE001 - see _user_failure
                raise self._user_failure(e, "counting its FLOPs in eval mode", px) from None
        self.total_params = count_params(self.model)
        self.unit_param_counts = unit_param_counts(self.model, self.units)
        # a shorter run of a longer budget: its savings are measured against the whole budget
        self.ledger = ComputeLedger(budget_scale=(cfg.budget_epochs or cfg.epochs) / cfg.epochs,
                                    clock=clock_for(self.device))
        self._plan: dict[int, tuple[float, float]] = {}  # epoch -> planned (spent, unfrozen) FLOPs
        self.epoch = 0  # epochs finished
        self.history: list[dict[str, Any]] = []
        self.loss_fn = nn.CrossEntropyLoss()
        # per-unit squared gradient norms summed over an epoch (adaptive freezing); persistent, so
        # that captured CUDA graphs can add into it
        self.grad_sq = torch.zeros(len(self.units), device=self.device) if schedule.needs_grad_stats else None
        self.runner = self.make_runner({"off": "eager"}.get(cfg.fast_path, cfg.fast_path))

    # ------------------------------------------------------------------ public
    @classmethod
    def resume(cls, out_dir: str | os.PathLike, callbacks: list[Callback] | None = None, verbose: bool = True,
               data: Any = None, model: nn.Module | Callable[..., nn.Module] | None = None,
               progress_bar: bool | None = None, **overrides: Any) -> "Trainer":
        """Continue the run checkpointed in ``out_dir``. ``overrides`` replace config fields that
        do not change the result (``LOCAL_FIELDS``) or only its rounding (``ARITHMETIC_FIELDS``). A run started with ``data=``/``model=``
        objects needs them again (the checkpoint holds the weights, not the code)."""
        path = Path(out_dir) / CHECKPOINT
        if not path.is_file():
            raise UserError(f"{out_dir}: no {CHECKPOINT} here; nothing to resume (start a run with --out)")
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which
            raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: format: not a layerout checkpoint")
        allowed = set(LOCAL_FIELDS) | set(ARITHMETIC_FIELDS)
        bad = sorted(set(overrides) - allowed)
        if bad:
            raise ValueError(f"resume can only override {sorted(allowed)}, not {bad}")
        cfg = TrainConfig.from_dict({**ck["config"], **{k: v for k, v in overrides.items() if v is not None}})
        schedule = schedule_from_dict(ck["schedule"])
        schedule.load_state_dict(ck.get("schedule_state") or {})
        self = cls(cfg, schedule, out_dir=out_dir, callbacks=callbacks, verbose=verbose, data=data, model=model,
                   progress_bar=progress_bar)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.ledger = ComputeLedger.from_state_dict(ck["ledger"])
        self.history = list(ck["history"])
        self.epoch = int(ck["epoch"])
        torch.set_rng_state(ck["rng"])
        return self

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the last epoch's metrics (a callback returning True stops early).
        Computes with the recipe's threads and determinism settings, restored afterwards."""
        with computing_with(self.cfg.threads, self.cfg.deterministic):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.verbose and self.epoch == 0:
            self._log(f"training {self.cfg.model} on {self.cfg.dataset}"
                      f"{' (SYNTHETIC data: throughput only)' if self.data.synthetic else ''}: "
                      f"{len(self.units)} units, {self.total_params:,} parameters, schedule {self.schedule.kind}, "
                      f"{self.cfg.epochs} epochs x {self.steps_per_epoch} steps, device {self.device}"
                      f"{', CUDA graphs' if self.runner.mode == 'cudagraph' else ''}, {self.cfg.threads} "
                      f"thread{'s' if self.cfg.threads != 1 else ''}{', deterministic' if self.cfg.deterministic else ''}")
            if self.units_origin == "automatic":
                self._log("units (automatic; declare them or give train.units to change them): "
                          + ", ".join("+".join(u.prefixes) for u in self.units))
        # the time left: the epochs still to train at the rate of those trained so far (this process)
        self.job = JobProgress(1, self.cfg.epochs)
        self.job.restored("run", self.epoch, ended=False)
        if self.ledger.calibration_step_s is None and self.epoch == 0 and self._needs_calibration():
            self.ledger.calibration_step_s = self._calibrate()
            if self.runner.mode != "eager":  # graph path: epochs hold warm-ups and captures; time steady steps
                self.ledger.reference = "calibration"
        self.job.started("run")
        while self.epoch < self.cfg.epochs:
            metrics = self.train_epoch(self.epoch)
            self.epoch += 1
            self.job.trained("run", self.epoch)
            self.history.append(metrics)
            if self.out_dir is not None:
                self._save_checkpoint()
                write_csv(self.out_dir / "epochs.csv", self.history, [*METRICS, *EXTRA_METRICS])
            if self.verbose:
                self._log(self._progress_line(metrics))
            stop = False
            for cb in self.callbacks:
                stop = bool(cb(metrics, self)) or stop
            if stop:
                break
        final = self.history[-1] if self.history else {}
        if self.out_dir is not None:
            self._write_summary(final)
        return final

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of training plus evaluation; returns that epoch's metrics."""
        cfg, model = self.cfg, self.model
        lr = lr_at(cfg, epoch)
        self.freezer.set_base_lr(lr)
        model.train()
        state = self.freezer.on_epoch_start(epoch)
        samples_per_mask: dict[tuple[bool, ...], int] = {}
        steps_per_mask: dict[tuple[bool, ...], int] = {}
        grad_sq = self.grad_sq
        if grad_sq is not None:
            grad_sq.zero_()
        loss_sum = self.runner.loss_sum
        loss_sum.zero_()
        n_seen = 0
        batches = self.data.train_batches(cfg.batch_size, epoch, cfg.seed, cfg.augment, self.device)
        # a bar over the steps on a terminal, shown once the epoch has taken a second (host-side only)
        bar = step_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", self.progress_bar)
        clock = self.ledger.clock
        synchronize(self.device)
        t0, c0 = time.perf_counter(), read_clock(clock)
        for step, (x, y) in enumerate(batches):
            if step >= self.steps_per_epoch:
                break
            if self.schedule.stepwise:
                state = self.freezer.on_step(step)
            n = x.shape[0]
            samples_per_mask[state.frozen] = samples_per_mask.get(state.frozen, 0) + n
            steps_per_mask[state.frozen] = steps_per_mask.get(state.frozen, 0) + 1
            try:
                self.runner.step(x, y, state.frozen)  # forward, backward, grad stats, SGD; loss into loss_sum
            except Exception as e:  # noqa: BLE001 - see _user_failure
                raise self._user_failure(e, f"training step {step + 1}/{self.steps_per_epoch} of epoch {epoch + 1}",
                                         x) from None
            n_seen += n
            if bar is not None:
                bar.update()
        synchronize(self.device)
        seconds, clock_seconds = time.perf_counter() - t0, read_clock(clock) - c0
        if bar is not None:
            bar.close()
        steps = min(len(batches), self.steps_per_epoch)

        # accounting (host side, once per epoch)
        unfrozen = self.flops((False,) * len(self.units))
        frozen_frac_num = 0.0
        for mask, count in samples_per_mask.items():
            self.ledger.add_samples(self.flops(mask), unfrozen, count)
            frozen_frac_num += count * self._frozen_param_frac(mask)
        any_frozen = any(any(m) for m in samples_per_mask)
        self.ledger.end_epoch(frozen_frac_num / max(1, n_seen), seconds, steps, unfrozen_epoch=not any_frozen,
                              clock_seconds=clock_seconds)
        if grad_sq is not None:
            # steps in which each unit was trainable (and so added its gradient norm)
            grad_steps = [sum(c for m, c in steps_per_mask.items() if not m[i]) for i in range(len(self.units))]
            sq = grad_sq.tolist()
            norms = [math.sqrt(sq[i] / grad_steps[i]) if grad_steps[i] else None for i in range(len(sq))]
            self.schedule.observe_epoch(epoch, norms)

        planned = self.planned_compute_saved_frac(epoch + 1)  # after observe_epoch: adaptive's new decisions count
        val_loss, val_acc = self._evaluate_split("val", epoch)
        last = epoch + 1 == cfg.epochs
        test_acc = self._evaluate_split("test", epoch)[1] if (last or cfg.test_every_epoch) else None
        time_saved = self.ledger.time_saved_frac
        return {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / max(1, n_seen),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "test_accuracy": test_acc,
            "params_frozen_frac": self.ledger.params_frozen_frac,
            "compute_saved_frac": self.ledger.compute_saved_frac,
            "planned_compute_saved_frac": planned,
            "compute_spent_gflop": self.ledger.compute_spent_gflop,
            "time_saved_frac": time_saved,
            "train_time_s": self.ledger.train_time_s,
            "lr": lr,
            "frozen_units": state.mask_str,
            "synthetic": self.data.synthetic,
        }

    def planned_compute_saved_frac(self, from_epoch: int | None = None) -> float:
        """The compute_saved_frac this run will have at the end of its budget: the FLOPs of the
        epochs trained so far (the ledger) plus those of epochs ``from_epoch`` (default: the next
        one) to the last, under the masks the schedule will apply (``Schedule.mask_runs``), each
        step weighted by its samples (an epoch's last batch may be smaller). For schedules whose
        masks are fixed in advance (none, prefix, FreezeOut, LayerOut's seeded draws) it is the
        same number before the first epoch as at the end; an adaptive schedule's plan holds its
        current mask to the end."""
        start = self.epoch if from_epoch is None else from_epoch
        spent, unfrozen = self.ledger.flops_spent, self.ledger.flops_unfrozen
        for epoch in range(start, self.cfg.epochs):
            f, u = self._planned_epoch_flops(epoch)
            spent += f
            unfrozen += u
        return saved_frac(spent, unfrozen, self.ledger.budget_scale)

    def _planned_epoch_flops(self, epoch: int) -> tuple[float, float]:
        """(FLOPs under the schedule's masks, FLOPs unfrozen) of one whole epoch; cached unless
        the schedule learns from training (its plan may change every epoch)."""
        if epoch in self._plan and not self.schedule.needs_grad_stats:
            return self._plan[epoch]
        n_train, bs = self.data.n_train, self.cfg.batch_size
        unfrozen = self.flops((False,) * len(self.units))
        spent = total = 0.0
        for first, end, mask in self.schedule.mask_runs(epoch):
            samples = min(n_train, end * bs) - first * bs  # steps first..end-1, the last batch as it comes
            spent += self.flops(mask) * samples
            total += unfrozen * samples
        self._plan[epoch] = (spent, total)
        return spent, total

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
        """(mean loss, accuracy) on tensors ``x``, ``y`` in eval mode; the model's mode is restored."""
        return self.evaluate_batches((x[i:i + batch_size].to(self.device, non_blocking=True),
                                      y[i:i + batch_size].to(self.device, non_blocking=True))
                                     for i in range(0, len(x), batch_size))

    @torch.no_grad()
    def evaluate_batches(self, batches: Any) -> tuple[float, float]:
        """(mean loss, accuracy) over ``(x, y)`` batches in eval mode; the model's mode is restored."""
        was_training = self.model.training
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        n = 0
        for xb, yb in batches:
            out = self.model(xb)
            loss += nn.functional.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
            n += len(yb)
        self.model.train(was_training)
        n = max(1, n)
        return loss.item() / n, correct.item() / n

    def _evaluate_split(self, split: str, epoch: int) -> tuple[float, float]:
        try:
            return self.evaluate_batches(self.data.eval_batches(split, self.device))
        except Exception as e:  # noqa: BLE001 - see _user_failure
            raise self._user_failure(e, f"evaluating the {split} split after epoch {epoch + 1}") from None

    def _user_failure(self, exc: Exception, what: str, x: torch.Tensor | None = None) -> Exception:
        """What to raise when a step or an evaluation (``what``) failed: where the model or data is
        the user's, a UserError naming the step and the input shape, since it fails the same way on
        every attempt (a search ends the trial at once rather than retrying it); a UserError (bad
        data, already named), an out-of-memory error (may pass on a less crowded GPU) and a failure
        of the built-in models on built-in data (a bug of ours) as they were."""
        if not self.user_code or isinstance(exc, (UserError, torch.cuda.OutOfMemoryError)):
            return exc
        shape = f" on input shape {tuple(x.shape)}" if x is not None else ""
        return UserError(f"model: {self.cfg.model}: {what} failed{shape} ({userland.one_line(exc)})")

    def policy_dict(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """This run's policy in the policy-file format (docs/FORMATS.md), replayable with ``--policy``."""
        metrics = metrics if metrics is not None else (self.history[-1] if self.history else {})
        measured = {k: metrics.get(k) for k in METRICS if k != "epoch" and metrics.get(k) is not None}
        measured["epochs"] = metrics.get("epoch", 0)
        prov = provenance(model=self.cfg.model, dataset=self.cfg.dataset, epochs=self.cfg.epochs,
                          batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                          steps_per_epoch=self.steps_per_epoch, device=str(self.device),
                          synthetic=self.data.synthetic,
                          train={k: v for k, v in asdict(self.cfg).items()
                                 if k not in LOCAL_FIELDS})
        if (is_user_model(self.cfg.model) or is_user_dataset(self.cfg.dataset)) and userland.code_paths():
            prov["code_paths"] = userland.code_paths()  # where layerout.train --policy looks for the code
        return Policy(model=self.cfg.model, units=[u.name for u in self.units], schedule=self.schedule.to_dict(),
                      measured=measured, provenance=prov).to_dict()

    # ------------------------------------------------------------------ internals
    def _frozen_param_frac(self, mask: tuple[bool, ...]) -> float:
        return sum(c for c, f in zip(self.unit_param_counts, mask) if f) / max(1, self.total_params)

    def make_runner(self, mode: str, **options: Any) -> StepRunner:
        """The step runner for this trainer's model and optimizer (``options``: StepRunner's)."""
        stats = self.grad_sq is not None
        return StepRunner(self.model, self.optimizer, self.loss_fn, self.device, mode=mode,
                          after_backward=self._accumulate_grad_norms if stats else None,
                          accumulators=[self.grad_sq] if stats else [], log=self._log, **options)

    def _accumulate_grad_norms(self, frozen: tuple[bool, ...]) -> None:
        """Add each trainable unit's squared gradient norm of this step into ``grad_sq`` (on the
        device, no sync; the epoch loop counts the steps)."""
        assert self.grad_sq is not None
        for i, ps in enumerate(self.freezer.params):
            if frozen[i]:
                continue
            grads = [p.grad for p in ps if p.grad is not None]
            if grads:
                self.grad_sq[i] += torch.stack(torch._foreach_norm(grads)).pow(2).sum()

    def _needs_calibration(self) -> bool:
        """True unless epoch 0 runs entirely unfrozen and eagerly (then it is the time reference)."""
        if self.runner.mode != "eager":
            return True
        last = max(0, self.steps_per_epoch - 1)
        return self.schedule.state(0, 0).any_frozen or self.schedule.state(0, last).any_frozen

    def _calibrate(self) -> float:
        """Median time of an unfrozen step on throwaway copies of the model and optimizer."""
        model = copy.deepcopy(self.model)
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                              weight_decay=self.cfg.weight_decay)
        x, y = self.data.head(self.cfg.batch_size)
        x, y = x.to(self.device), y.to(self.device)
        aug = self.data.augment if self.cfg.augment else None
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        runner = StepRunner(model, opt, self.loss_fn, self.device, mode=self.runner.mode, log=self._log)
        unfrozen = (False,) * len(self.units)

        def step() -> None:
            runner.step(augment_batch(x, gen, aug), y, unfrozen)  # the same step path as training

        cpu_rng = torch.get_rng_state()
        try:
            # untimed: 2 steps, plus the graph path's warm-up steps, capture and self-check
            seconds = time_unfrozen_steps(step, self.device, warmup=2 + (runner.warmup + 2) * (runner.mode != "eager"),
                                          clock=self.ledger.clock)
        finally:
            torch.set_rng_state(cpu_rng)
        if runner.mode == "eager" and self.runner.mode != "eager":  # its capture or self-check failed: so would ours
            self.runner.turn_off(runner.off_reason or "failed in calibration", quiet=True)
        return seconds

    def _save_checkpoint(self) -> None:
        ck = {
            "format": CHECKPOINT_FORMAT, "version": 1,
            "config": asdict(self.cfg),
            "schedule": self.schedule.to_dict(),
            "schedule_state": self.schedule.state_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ledger": self.ledger.state_dict(),
            "history": self.history,
            "rng": torch.get_rng_state(),
        }
        atomic_write(self.out_dir / CHECKPOINT, lambda f: torch.save(ck, f))

    def _write_summary(self, final: dict[str, Any]) -> None:
        summary = {
            "metrics": final,
            "config": asdict(self.cfg),
            "policy": self.policy_dict(final),
            "units": [u.name for u in self.units],
            "device": str(self.device),
            "flops_per_sample": {("".join("1" if f else "0" for f in m)): v for m, v in self.flops.per_sample.items()},
            "unfrozen_step_s": self.ledger.unfrozen_step_s,
            "time_clock": self.ledger.clock,  # what unfrozen_step_s and time_saved_frac were measured on
            "train_clock_s": self.ledger.train_clock_s,
            "finished": self.epoch >= self.cfg.epochs,
        }
        atomic_write(self.out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")

    def _progress_line(self, m: dict[str, Any]) -> str:
        """One epoch's line: its metrics, the training time so far (``train_time``: the timed
        steps of every epoch, not evaluation) and the estimated wall-clock time left."""
        ts = m["time_saved_frac"]
        test = f"  test_acc {m['test_accuracy']:.4f}" if m.get("test_accuracy") is not None else ""
        left = self.job.status().left_s if getattr(self, "job", None) is not None else None
        return (f"epoch {m['epoch']:>3}/{self.cfg.epochs}  frozen {m['frozen_units']}  "
                f"train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  val_acc {m['val_accuracy']:.4f}"
                f"{test}  params_frozen {m['params_frozen_frac']:.3f}  compute_saved {m['compute_saved_frac']:.3f}  "
                f"time_saved {'n/a' if ts is None else f'{ts:.3f}'}  lr {m['lr']:.4g}  "
                f"train_time {m['train_time_s']:.1f}s" + (f"  left ~{format_seconds(left)}" if left else ""))

    @staticmethod
    def _log(line: str) -> None:
        print(line, file=sys.stdout, flush=True)
