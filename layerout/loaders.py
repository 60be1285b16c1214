"""The DataLoader path: your own ``torch.utils.data.Dataset`` splits and image folders
(``imagefolder:PATH``) read per sample by a ``DataLoader`` (worker processes, pinned memory,
non-blocking copies) as :class:`DatasetSplits`, each batch's labels checked
(``checked_batches``: a bad label or an unreadable item named by its Dataset index and batch),
in the same reproducible order as the tensor path (``layerout.batches``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, default_collate

from layerout import userland
from layerout.augment import AugmentConfig, augment_batch
from layerout.batches import epoch_generator, val_split
from layerout.choices import IMAGEFOLDER
from layerout.errors import UserError

DEFAULT_IMAGE_SIZE = 64  # imagefolder images are resized and center-cropped to this size unless told
STATS_IMAGES = 256  # imagefolder: per-channel mean and std from this many training images


def sample_pair(ds: Any, i: int, where: str) -> tuple[torch.Tensor, Any]:
    """Item ``i`` of a Dataset as (input tensor, label); a one-line UserError otherwise."""
    try:
        item = ds[i]
    except Exception as e:  # noqa: BLE001 - the user's __getitem__ failed
        raise UserError(f"{where}: reading item {i} failed ({userland.one_line(e)})") from None
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise UserError(f"{where}: items must be (input, label) pairs, got {type(item).__name__}"
                        + (f" of {len(item)}" if isinstance(item, (tuple, list)) else ""))
    x, y = item
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{where}: inputs must be tensors, got {type(x).__name__}"
                        + ("; add torchvision.transforms.ToTensor() to its transform" if "Image" in type(x).__name__
                           else ""))
    return x, y


@dataclass
class DatasetSplits:
    """Datasets for each split, read through a ``DataLoader`` (the path for data that does not
    fit on the device, or is read per sample: image folders, your Datasets).

    Each epoch's order is ``torch.randperm`` drawn from ``epoch_generator(seed, epoch)`` on the
    training device, exactly as :class:`BatchIterator` draws it, cut into batches the loader's
    ``workers`` processes assemble; batches come in pinned memory on CUDA and are copied to the
    device without blocking, then augmented there with the same generator. The workers' own
    random seeds (for random transforms in a Dataset) also follow (seed, epoch), so a resumed run
    gets the same batches as long as ``workers`` is the same.
    """

    train: Any
    val: Any
    test: Any
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    workers: int = 0
    synthetic: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    eval_batch_size: int = 256

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    def _loader(self, ds: Any, device: torch.device, **kw: Any) -> DataLoader:
        return DataLoader(ds, num_workers=self.workers, pin_memory=torch.device(device).type == "cuda", **kw)

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: bool,
                      device: str | torch.device) -> "LoaderBatches":
        return LoaderBatches(self, batch_size, epoch, seed, self.augment if augment else None, torch.device(device))

    def eval_batches(self, split: str, device: str | torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = torch.device(device)
        ds, bs = (self.val if split == "val" else self.test), self.eval_batch_size
        batches = [list(range(i, min(len(ds), i + bs))) for i in range(0, len(ds), bs)]
        loader = self._loader(ds, device, batch_size=bs)
        for x, y in checked_batches(loader, ds, batches, self.num_classes, self.error_prefix(split),
                                    "of the evaluation"):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def error_prefix(self, split: str) -> str:
        """How errors name a split's items: ``dataset: <name>: <split>``; the validation share held
        out of ``train`` is named by its items' indices in ``train``."""
        ds = getattr(self, split)
        if split == "val" and isinstance(ds, Subset) and base_dataset(ds) is base_dataset(self.train):
            return f"dataset: {self.name}: train (held out for validation)"
        return f"dataset: {self.name}: {split}"

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate([self.train[i] for i in range(min(n, len(self.train)))])
        return x, y


class LoaderBatches:
    """One epoch of training batches from a :class:`DatasetSplits` (see its docstring)."""

    def __init__(self, splits: DatasetSplits, batch_size: int, epoch: int, seed: int,
                 augment: AugmentConfig | None, device: torch.device):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.splits, self.batch_size, self.epoch, self.seed = splits, batch_size, epoch, seed
        self.augment, self.device = augment, device

    def __len__(self) -> int:
        return -(-self.splits.n_train // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = self.splits.n_train, self.batch_size
        gen = epoch_generator(self.seed, self.epoch, self.device)
        order = torch.randperm(n, generator=gen, device=self.device).tolist()  # BatchIterator's order
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        # the workers' base seed (for random transforms inside the Dataset): from (seed, epoch) too
        worker_seed = np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, int(self.epoch), 0xDA7A]).generate_state(1)
        loader = self.splits._loader(self.splits.train, self.device, batch_sampler=batches,
                                     generator=torch.Generator().manual_seed(int(worker_seed[0])))
        for xb, yb in checked_batches(loader, self.splits.train, batches, self.splits.num_classes,
                                      self.splits.error_prefix("train"), f"of epoch {self.epoch + 1}"):
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            yield augment_batch(xb, gen, self.augment), yb


def dataset_index(ds: Any, i: int) -> int:
    """Position ``i`` of ``ds`` as an index of the Dataset under it (through ``Subset``s, such as the
    validation share held out of ``train``): the index a user looks up in their own Dataset."""
    while isinstance(ds, Subset):
        i, ds = int(ds.indices[i]), ds.dataset
    return int(i)


def base_dataset(ds: Any) -> Any:
    """The Dataset under ``ds``'s ``Subset``s: the one the user gave."""
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds


def check_labels(y: Any, num_classes: int, where: str, index: Any = None) -> None:
    """Labels as the loader collated them (on the CPU, before any copy to the device): integer class
    indices in [0, num_classes). A UserError naming the first bad one's Dataset item
    (``index(position)``) otherwise. A min/max over one batch: cheap next to the training step, and
    an out-of-range label would otherwise fail inside the loss (on CUDA as a device-side assert that
    names nothing)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point() or y.is_complex() \
            or y.dtype == torch.bool:
        got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserError(f"{where}: labels must be integer class indices, got {got}")
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if len(bad):
        j = int(bad[0])
        item = f"item {index(j)}" if index is not None else f"label {j}"
        more = f"; {len(bad)} labels of this batch are outside" if len(bad) > 1 else ""
        raise UserError(f"{where}: {item} has label {int(y[j])}, outside [0, {num_classes - 1}] "
                        f"(num_classes = {num_classes}){more}")


def _cause(exc: BaseException) -> str:
    """``Type: message`` of an exception; of the original one when a DataLoader worker raised it
    (its message is then the worker's whole traceback)."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line.strip() for line in text.splitlines() if line.strip()]
        return last[-1][:240] if last else type(exc).__name__
    return userland.one_line(exc)


def checked_batches(loader: Any, ds: Any, batches: list[list[int]], num_classes: int, where: str,
                    when: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``loader``'s batches (``batches[b]``: the positions in ``ds`` of batch b), each label checked
    (:func:`check_labels`). A failure to read or batch the user's items, or a bad label, is one
    UserError naming the Dataset item where it can, and the batch (``batch b/B <when>``): the same on
    every attempt, so a trial ends at once instead of being retried."""
    reading = iter(loader)
    for b, positions in enumerate(batches):
        at = f"batch {b + 1}/{len(batches)} {when}"
        try:
            xb, yb = next(reading)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - the user's Dataset (or its files) failed
            raise _read_error(ds, positions, f"{where}: {at}", e) from None
        check_labels(yb, num_classes, f"{where}: {at}", lambda j: dataset_index(ds, positions[j]))
        yield xb, yb


def _read_error(ds: Any, positions: list[int], where: str, exc: BaseException) -> UserError:
    """The error for a batch the loader could not make: the first of its items that fails when read
    alone (here, in this process), else the batch as a whole (items that do not batch together, or
    fail only in a worker process)."""
    for p in positions:
        try:
            ds[p]
        except Exception as e:  # noqa: BLE001 - the user's __getitem__
            return UserError(f"{where}: reading item {dataset_index(ds, p)} failed ({_cause(e)})")
    return UserError(f"{where}: could not be read or batched ({_cause(exc)})")


def imagefolder(path: str, val_frac: float, seed: int, image_size: int | None = None, workers: int = 0,
                random_erasing: bool = False, name: str | None = None) -> DatasetSplits:
    """``imagefolder:PATH``: ``PATH/train/<class>/*.jpg`` plus ``PATH/test/`` or ``PATH/val/`` (read
    with torchvision's ``ImageFolder``). The test split is ``test/``, else ``val/``; validation is
    ``val/`` when both exist, else held out of ``train/``. Images are resized (shorter side) and
    center-cropped to ``image_size`` (64), scaled to [0, 1] and normalized per channel with the
    mean and std of up to 256 seed-fixed training images; augmentation (pad + random crop,
    horizontal flip: the CIFAR recipe scaled to the size) runs on the device."""
    from torchvision import datasets, transforms

    name = name or f"{IMAGEFOLDER}{path}"
    root = Path(os.path.expanduser(path))
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if not (root / "train").is_dir():
        raise UserError(f"dataset: {name}: no folder {root / 'train'} (expected {root}/train/<class>/<images> "
                        "and test/ or val/ beside it)")
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    if not test_dir.is_dir():
        raise UserError(f"dataset: {name}: no folder {root / 'test'} or {root / 'val'} beside train/")
    val_dir = root / "val" if test_dir.name == "test" and (root / "val").is_dir() else None
    resize = [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]

    def folder(d: Path, tf: Any) -> Any:
        try:
            return datasets.ImageFolder(str(d), transform=transforms.Compose(tf))
        except (FileNotFoundError, OSError) as e:  # no class folders, or no images in them
            raise UserError(f"dataset: {name}: {d}: {' '.join(str(e).split())[:200]}") from None

    plain = folder(root / "train", resize)
    stats_idx = np.random.default_rng(seed).permutation(len(plain))[:STATS_IMAGES]
    imgs = torch.stack([sample_pair(plain, int(i), f"dataset: {name}: train")[0] for i in stats_idx])
    mean, std = imgs.mean(dim=(0, 2, 3)), imgs.std(dim=(0, 2, 3)).clamp_min(1e-6)
    tf = [*resize, transforms.Normalize(mean.tolist(), std.tolist())]
    train, test = folder(root / "train", tf), folder(test_dir, tf)
    val: Any = folder(val_dir, tf) if val_dir is not None else None
    for d, ds in ((test_dir, test), (val_dir, val)):
        if ds is not None and ds.classes != train.classes:
            raise UserError(f"dataset: {name}: {d}: its class folders ({', '.join(ds.classes)}) differ from "
                            f"train/'s ({', '.join(train.classes)})")
    if val is None:
        tr, va = val_split(len(train), val_frac, seed)
        train, val = Subset(train, tr.tolist()), Subset(train, va.tolist())
    aug = AugmentConfig(crop_pad=max(1, size // 8), flip=True, random_erasing=random_erasing,
                        pad_value=tuple((-mean / std).tolist()))
    return DatasetSplits(train=train, val=val, test=test, num_classes=len(plain.classes), in_channels=3,
                         image_size=size, name=name, workers=workers, augment=aug,
                         mean=tuple(mean.tolist()), std=tuple(std.tolist()))
