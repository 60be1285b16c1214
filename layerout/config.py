"""A run's training recipe (``TrainConfig``) and the learning rate it implies, without torch.

The recipe is what a policy file carries and what a search's ``train:`` block fills: kept apart
from the trainer so that spaces, policies and command lines check it without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from layerout.checks import check_bool, check_choice, check_int, check_number, fail, is_int, short
from layerout.choices import BN_CHOICES, FAST_PATHS
from layerout.errors import UserError

# TrainConfig fields that say where and how fast a run ran, not what it computed: a resumed run
# may change them, and a replayed policy's recipe never carries them.
LOCAL_FIELDS = ("device", "data_dir", "download", "fast_path")
# Fields that decide the run's arithmetic on its machine (layerout.arithmetic): recorded in the
# recipe so that a replay computes the same, but a resumed run may change them.
ARITHMETIC_FIELDS = ("threads", "deterministic")


@dataclass
class TrainConfig:
    """The fixed training recipe of a run (everything but the freezing schedule)."""

    model: str
    dataset: str
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[int] = field(default_factory=list)  # epochs where lr *= lr_gamma
    lr_gamma: float = 0.1
    lr_warmup_epochs: int = 0  # the paper's ResNet-110 warm start: lr_warmup_value for this many epochs
    lr_warmup_value: float | None = None
    seed: int = 0
    device: str = "auto"  # auto = cuda if available, else cpu
    val_frac: float = 0.1
    augment: bool = True
    random_erasing: bool = False
    # frozen units' BatchNorm: train (keep updating statistics, LayerOut), eval (FreezeOut's authors), or
    # auto: the schedule family's choice; a Trainer records the resolved value in its config
    bn_frozen: str = "auto"
    data_dir: str | None = None
    download: bool = True
    test_every_epoch: bool = False
    max_train_batches: int | None = None  # cap per epoch (smoke tests)
    synthetic_size: int | None = None
    fast_path: str = "auto"  # one captured CUDA graph per mask (layerout/fastpath.py): auto = on CUDA with SGD; off; cudagraph
    # your own model: its units as [[name, [module prefixes]], ...] (also a list of prefixes or a
    # mapping name -> prefixes); None: the units the model declares, else automatic (layerout.units)
    units: list | None = None
    image_size: int | None = None  # imagefolder datasets: images resized and center-cropped to this (64)
    data_workers: int = 2  # DataLoader worker processes (Datasets, image folders; tensors need none)
    # a run shorter than its budget (layerout.budget): the epochs its compute and time saved are
    # measured against, as the unfrozen model trained that long; None = its own epochs
    budget_epochs: int | None = None
    # intra-op CPU threads the run computes with (layerout.arithmetic); None: as many as torch uses
    # when the Trainer is made. A Trainer records the resolved count, so a replay computes the same
    threads: int | None = None
    deterministic: bool = False  # deterministic kernels (cuDNN): exact replays on one kind of GPU, slower

    def __post_init__(self) -> None:
        """Every check of a training recipe, wherever it came from (a space's ``train:`` block, a
        policy's recipe, command-line flags); errors name the field as ``train.<field>``."""
        # a built-in name, an import path or a label for a model object given to the Trainer: what
        # it names is checked where the model is built (build_model), the space and the command line
        if not isinstance(self.model, str) or not self.model:
            raise fail("train.model", f"must be a model name or an import path like my_pkg.nets:build, "
                                      f"got {self.model!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise fail("train.dataset", f"must be a dataset name, imagefolder:PATH or an import path, "
                                        f"got {self.dataset!r}")
        epochs = check_int("train.epochs", self.epochs, 1)
        check_int("train.batch_size", self.batch_size, 1)
        self.lr = check_number("train.lr", self.lr, 0.0, 1e3, low_open=True)
        self.momentum = check_number("train.momentum", self.momentum, 0.0, 1.0)
        if self.momentum == 1.0:
            raise fail("train.momentum", "must be below 1, got 1.0")
        self.weight_decay = check_number("train.weight_decay", self.weight_decay, 0.0, 1.0)
        ms = self.lr_milestones  # a milestone past the end is allowed: a policy replayed for fewer epochs
        if not isinstance(ms, list) or not all(is_int(m) and m >= 1 for m in ms) or ms != sorted(set(ms)):
            raise fail("train.lr_milestones", f"must be an increasing list of integer epochs >= 1, got {short(ms)}")
        self.lr_gamma = check_number("train.lr_gamma", self.lr_gamma, 0.0, 1e3, low_open=True)
        check_int("train.lr_warmup_epochs", self.lr_warmup_epochs, 0, epochs - 1, f" (0 .. epochs-1, epochs = {epochs})")
        if self.lr_warmup_value is not None:
            self.lr_warmup_value = check_number("train.lr_warmup_value", self.lr_warmup_value, 0.0, 1e3,
                                                low_open=True)
        check_int("train.seed", self.seed, 0, 2**31 - 1)
        if not (isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda")
                                                  or self.device.startswith("cuda:"))):
            raise fail("train.device", f"must be one of auto, cpu, cuda, got {short(self.device)}")
        self.val_frac = check_number("train.val_frac", self.val_frac, 0.0, 0.5, low_open=True)
        for name in ("augment", "random_erasing", "download", "test_every_epoch"):
            check_bool(f"train.{name}", getattr(self, name))
        check_choice("train.bn_frozen", self.bn_frozen, BN_CHOICES)
        check_choice("train.fast_path", self.fast_path, FAST_PATHS)
        for name in ("max_train_batches", "synthetic_size", "image_size"):
            if getattr(self, name) is not None:
                check_int(f"train.{name}", getattr(self, name), 1)
        check_int("train.data_workers", self.data_workers, 0)
        if self.threads is not None:
            check_int("train.threads", self.threads, 1, 1024)
        check_bool("train.deterministic", self.deterministic)
        if self.budget_epochs is not None:
            if not is_int(self.budget_epochs) or self.budget_epochs < epochs:
                raise fail("train.budget_epochs", f"must be null or an integer >= epochs ({epochs}): the budget a "
                                                  f"shorter run is measured against, got {short(self.budget_epochs)}")
        if self.units is not None:
            self.units = check_unit_spec(self.units)
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise fail("train.data_dir", f"must be a folder path or null, got {short(self.data_dir)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"train: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**d)


def check_unit_spec(units: Any) -> list:
    """``train.units`` as ``[[name, [prefixes]], ...]``: from a non-empty list of prefixes, a mapping
    name -> prefix(es), or such pairs; names distinct (whether the prefixes fit the model is
    checked when it is built)."""
    bad = fail("train.units", "must be a non-empty list of module prefixes, or a mapping unit name -> "
                              f"prefix or list of prefixes, got {units!r}")
    items = list(units.items()) if isinstance(units, dict) else units
    if not isinstance(items, (list, tuple)) or not items:
        raise bad
    pairs = []
    for u in items:
        if isinstance(u, str) and u:
            pairs.append([u, [u]])
        elif (isinstance(u, (list, tuple)) and len(u) == 2 and isinstance(u[0], str) and u[0]
              and (isinstance(u[1], str) and u[1] or isinstance(u[1], (list, tuple)) and u[1]
                   and all(isinstance(p, str) and p for p in u[1]))):
            pairs.append([u[0], [u[1]] if isinstance(u[1], str) else list(u[1])])
        else:
            raise bad
    names = [n for n, _ in pairs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise fail("train.units", f"duplicate unit names {dup}")
    return pairs


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The global learning rate of ``epoch``: warm start, then step decay at the milestones."""
    if epoch < cfg.lr_warmup_epochs and cfg.lr_warmup_value is not None:
        return float(cfg.lr_warmup_value)
    return float(cfg.lr) * cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if epoch >= m)
