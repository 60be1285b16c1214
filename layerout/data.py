"""Datasets: whole tensors on the training device, or a DataLoader over Datasets; reproducible batches.

``load_data`` takes a built-in name, ``imagefolder:PATH`` (a folder in torchvision's
``ImageFolder`` layout) or an import path to your own data function (``my_pkg.data:load``,
returning a :class:`UserData` or a tuple). The built-in datasets come back as normalized float
tensors (N, C, H, W) for train / validation / test (:class:`DataSplits`). The validation split is
held out of the training set by ``seed``; the test split is the dataset's own (for digits, a fixed
20% independent of ``seed``). Torchvision datasets are read through their ``.data`` / ``.targets``
arrays in one go: no per-sample PIL transforms. Augmentation runs on whole batches on the device
(``layerout.augment``).

Two paths feed the trainer the same batches for the same seed:

* tensors (built-in datasets, and your data function's tensors or arrays): kept on the device
  when they fit (the fast path), batches cut from them (``layerout.batches.BatchIterator``);
* Datasets (your data function's ``torch.utils.data.Dataset``s, image folders): a
  ``DataLoader`` with worker processes, pinned memory and non-blocking copies
  (``layerout.loaders.DatasetSplits``), for data that does not fit on the device or is read per sample.

Both draw the epoch's order from ``epoch_generator(seed, epoch)``, so a resumed run sees the
same batches. The built-in datasets' facts (classes, shape, normalization, files) are their
registrations in ``layerout.datasets``; their loaders are here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from layerout import userland
from layerout.augment import AugmentConfig
from layerout.checks import short
from layerout.choices import IMAGEFOLDER
from layerout.datasets import DATASETS, LoadArgs, reads_files
from layerout.batches import BatchIterator, epoch_generator, iterate_batches, val_split  # noqa: F401 - also here
from layerout.errors import UserError
from layerout.loaders import (DatasetSplits, base_dataset, check_labels, checked_batches,  # noqa: F401 - also here
                              dataset_index, imagefolder, sample_pair)


def data_dir_note(dataset: str, data_dir: str | None) -> str | None:
    """The one-line note for a data folder given with a dataset that reads no files, else None."""
    if not data_dir or reads_files(dataset) or dataset not in DATASETS:
        return None
    return f"note: --data-dir {data_dir} is not used: the {dataset} dataset {DATASETS[dataset].origin}, no files are read"
DEFAULT_DATA_DIR = "~/.cache/layerout-tune/data"
DIGITS_TEST_FRAC = 0.2
_DIGITS_SPLIT_SEED = 20231122  # fixed: the digits test split never depends on the run's seed


@dataclass
class DataSplits:
    """Normalized tensors for each split, on the requested device when they fit (else CPU)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    synthetic: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: tuple[float, ...] = ()  # per-channel normalization, from the training split
    std: tuple[float, ...] = ()

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    # the interface the trainer uses (shared with DatasetSplits)
    @property
    def n_train(self) -> int:
        return len(self.train_x)

    @property
    def n_val(self) -> int:
        return len(self.val_x)

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: bool,
                      device: str | torch.device) -> "BatchIterator":
        """One epoch of shuffled (augmented) training batches on ``device``."""
        return iterate_batches(self.train_x, self.train_y, batch_size, epoch=epoch, seed=seed, shuffle=True,
                               augment=self.augment if augment else None, device=device)

    def eval_batches(self, split: str, device: str | torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The ``val`` or ``test`` split in order, in batches of 1024, on ``device``."""
        x, y = (self.val_x, self.val_y) if split == "val" else (self.test_x, self.test_y)
        for i in range(0, len(x), 1024):
            yield x[i:i + 1024].to(device, non_blocking=True), y[i:i + 1024].to(device, non_blocking=True)

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training samples (inputs, labels), unaugmented."""
        return self.train_x[:n], self.train_y[:n]


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """The data folder: ``data_dir`` or ~/.cache/layerout-tune/data."""
    return Path(os.path.expanduser(str(data_dir or DEFAULT_DATA_DIR))).resolve()


def load_data(
    name: str,
    device: str | torch.device = "cpu",
    val_frac: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    synthetic_shape: tuple[int, int, int] = (3, 32, 32),
    synthetic_size: int | None = None,
    random_erasing: bool = False,
    image_size: int | None = None,
    workers: int = 0,
) -> "DataSplits | DatasetSplits":
    """Load a dataset: built-in datasets as device-resident, normalized train/val/test tensors;
    ``imagefolder:PATH`` and your own data function (an import path) as :class:`UserData` says.
    ``image_size`` and ``workers`` are for the DataLoader path (image folders, Datasets)."""
    if not 0.0 < val_frac <= 0.5:
        raise UserError(f"val_frac must be in (0, 0.5], got {val_frac}")
    if isinstance(name, str) and name.startswith(IMAGEFOLDER):
        return imagefolder(name[len(IMAGEFOLDER):], val_frac, seed, image_size=image_size, workers=workers,
                           random_erasing=random_erasing, name=name)
    if is_user_dataset(name):
        return as_splits(userland.call_data_function(name), name, device=device, val_frac=val_frac, seed=seed,
                         workers=workers)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {short(name)}; allowed: {', '.join(DATASETS)}, {IMAGEFOLDER}PATH, or an "
                        "import path to your own data function like my_pkg.data:load")
    entry = DATASETS[name]
    x, y, tx, ty = entry.load(LoadArgs(root=data_root(data_dir), download=download, seed=seed, shape=synthetic_shape,
                                   size=synthetic_size or 4096, classes=entry.classes))
    aug = AugmentConfig(crop_pad=entry.crop_pad, flip=entry.flip)
    aug.random_erasing = random_erasing
    tr, va = val_split(len(x), val_frac, seed)
    x_tr = x[tr]
    if entry.normalize:
        mean = x_tr.mean(dim=(0, 2, 3))
        std = x_tr.std(dim=(0, 2, 3)).clamp_min(1e-6)
        norm = lambda t: (t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
        aug.pad_value = tuple((-mean / std).tolist())  # a black pixel, as padding before normalizing gives
        tensors = [norm(x_tr), y[tr], norm(x[va]), y[va], norm(tx), ty]
        mean_std = (tuple(mean.tolist()), tuple(std.tolist()))
    else:
        tensors = [x_tr, y[tr], x[va], y[va], tx, ty]
        mean_std = ((0.0,) * x.shape[1], (1.0,) * x.shape[1])
    tensors = _to_device(tensors, device)
    return DataSplits(*tensors, num_classes=entry.classes, in_channels=x.shape[1], image_size=x.shape[-1], name=name,
                      synthetic=entry.synthetic, augment=aug, mean=mean_std[0], std=mean_std[1])


def _to_device(tensors: list[torch.Tensor], device: str | torch.device) -> list[torch.Tensor]:
    """Move all splits to ``device`` if they fit in (half of) its free memory; else keep them on CPU."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return tensors
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        if sum(t.numel() * t.element_size() for t in tensors) > free // 2:
            return [t.pin_memory() for t in tensors]  # batches are copied to the device as they go
    return [t.to(dev) for t in tensors]


def load_digits(args: LoadArgs | None = None) -> tuple[torch.Tensor, ...]:
    """scikit-learn's bundled 8x8 digits (1797 images); test = fixed 20%."""
    from sklearn.datasets import load_digits as bundled_digits

    d = bundled_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(x)))
    n_test = int(round(len(x) * DIGITS_TEST_FRAC))
    test, rest = perm[:n_test].sort().values, perm[n_test:].sort().values
    return x[rest], y[rest], x[test], y[test]


def _torchvision(name: str, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    """Train and test tensors from torchvision's arrays; missing files -> one-line UserError."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]  # the loaders below
    _extract_local_archives(name, root)
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:  # torchvision: RuntimeError (not found), URLError (an OSError)
        if download:  # keep the network error's gist: it tells a proxy problem from a missing file
            why, fix = "could not be downloaded", "run with network access"
            fix += f" ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
        else:
            why, fix = "downloading is off", "allow downloading"
        raise UserError(f"{name}: dataset files not found in {root} and {why}; "
                        f"put {DATASETS[name].files} into {root}, or {fix}") from None
    out = []
    for ds in (train, test):
        data = torch.as_tensor(np.asarray(ds.data))
        x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # MNIST (N,H,W); CIFAR NHWC
        x = x.float().div_(255.0)
        if name == "mnist":
            x = F.pad(x, (2, 2, 2, 2))  # 28x28 -> 32x32, as the paper's net expects
        out += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
    return tuple(out)


def _extract_local_archives(name: str, root: Path) -> None:
    """Unpack archives a user put in the data folder, so they work offline with download=False too."""
    from torchvision.datasets.utils import extract_archive

    if name == "mnist":
        raw = root / "MNIST" / "raw"
        for gz in raw.glob("*-ubyte.gz") if raw.is_dir() else []:
            if not gz.with_suffix("").exists():
                extract_archive(str(gz), str(raw))
        return
    folder, archive = {"cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
                       "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz")}[name]
    if not (root / folder).is_dir() and (root / archive).is_file():
        extract_archive(str(root / archive), str(root))


def load_mnist(args: LoadArgs) -> tuple[torch.Tensor, ...]:
    return _torchvision("mnist", args.root, args.download)


def load_cifar10(args: LoadArgs) -> tuple[torch.Tensor, ...]:
    return _torchvision("cifar10", args.root, args.download)


def load_cifar100(args: LoadArgs) -> tuple[torch.Tensor, ...]:
    return _torchvision("cifar100", args.root, args.download)


def load_synthetic(args: LoadArgs) -> tuple[torch.Tensor, ...]:
    """Random N(0,1) images and labels: for throughput measurement only (accuracy is meaningless)."""
    g = torch.Generator().manual_seed(args.seed)
    size = args.size
    n_test = max(1, size // 5)
    x = torch.randn(size + n_test, *args.shape, generator=g)
    y = torch.randint(0, args.classes, (size + n_test,), generator=g)
    return x[:size], y[:size], x[size:], y[size:]


# ---------------------------------------------------------------- your own data
def is_user_dataset(name: str) -> bool:
    """True for an import path to a data function, or a data object registered by name."""
    return (isinstance(name, str) and name not in DATASETS and not name.startswith(IMAGEFOLDER)
            and userland.names_user_code(name))


@dataclass
class UserData:
    """What your data function returns (``dataset: my_pkg.data:load`` in a space or ``--dataset``).

    ``train`` and ``test`` are each either a pair ``(inputs, labels)`` of tensors or arrays
    (inputs: one row per sample, any shape; labels: integers in [0, num_classes)), or a
    ``torch.utils.data.Dataset`` whose items are ``(input tensor, integer label)`` pairs.
    ``num_classes`` is the number of classes. ``val`` (optional, same kinds) is the validation
    split; without it, a ``val_frac`` share of ``train`` is held out by the run's seed.

    Tensors take the fast path (kept on the training device when they fit); Datasets go through a
    ``DataLoader`` with worker processes. Inputs are used as given: scale them in your function
    (the built-in datasets' normalization and augmentation are not applied). A tuple
    ``(train, test, num_classes)`` or ``(x_train, y_train, x_test, y_test, num_classes)`` is
    accepted as well.
    """

    train: Any
    test: Any
    num_classes: int
    val: Any = None


def as_user_data(obj: Any, where: str) -> UserData:
    """A data function's return value as :class:`UserData`; a one-line UserError if it is none of
    the accepted kinds."""
    if isinstance(obj, UserData):
        return obj
    if isinstance(obj, tuple) and len(obj) == 3:
        return UserData(train=obj[0], test=obj[1], num_classes=obj[2])
    if isinstance(obj, tuple) and len(obj) == 5:
        return UserData(train=(obj[0], obj[1]), test=(obj[2], obj[3]), num_classes=obj[4])
    what = f"a tuple of {len(obj)}" if isinstance(obj, tuple) else type(obj).__name__
    raise UserError(f"{where}: returned {what}; a data function returns UserData(train, test, num_classes), "
                    "(train, test, num_classes) or (x_train, y_train, x_test, y_test, num_classes)")


def _is_dataset(obj: Any) -> bool:
    return isinstance(obj, Dataset) or (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
                                        and not isinstance(obj, (tuple, list, torch.Tensor, np.ndarray)))


def _pair(obj: Any, where: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) as tensors: float inputs as float32, labels int64 in [0, num_classes)."""
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise UserError(f"{where}: must be an (inputs, labels) pair of tensors or arrays, or a torch Dataset; "
                        f"got {type(obj).__name__}")
    try:
        x, y = torch.as_tensor(obj[0]), torch.as_tensor(obj[1])
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{where}: cannot make tensors of it ({userland.one_line(e)})") from None
    if x.is_floating_point():
        x = x.float()
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UserError(f"{where}: labels must be a 1-D array of integer class indices, got shape "
                        f"{tuple(y.shape)} of {y.dtype}")
    if x.ndim < 1 or len(x) != len(y):
        raise UserError(f"{where}: {len(x) if x.ndim else 0} inputs but {len(y)} labels")
    if len(y) == 0:
        raise UserError(f"{where}: is empty")
    y = y.long()
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise UserError(f"{where}: labels must be within [0, {num_classes - 1}] (num_classes = {num_classes}), "
                        f"got {lo}..{hi}")
    return x.contiguous(), y


def as_splits(obj: Any, name: str, device: str | torch.device = "cpu", val_frac: float = 0.1, seed: int = 0,
              workers: int = 0) -> "DataSplits | DatasetSplits":
    """Your data (a :class:`UserData`, a tuple it accepts, or splits already made) as the splits
    the trainer reads: tensors -> :class:`DataSplits`; any Dataset -> :class:`DatasetSplits`."""
    if isinstance(obj, (DataSplits, DatasetSplits)):
        return obj
    data = as_user_data(obj, f"dataset: {name}")
    nc = data.num_classes
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 2:
        raise UserError(f"dataset: {name}: num_classes must be an integer >= 2, got {nc!r}")
    parts = {"train": data.train, "test": data.test, **({"val": data.val} if data.val is not None else {})}
    if any(_is_dataset(v) for v in parts.values()):
        ds = {k: v if _is_dataset(v) else TensorDataset(*_pair(v, f"dataset: {name}: {k}", nc))
              for k, v in parts.items()}
        for k, v in ds.items():
            if len(v) == 0:
                raise UserError(f"dataset: {name}: {k}: is empty")
        train = ds["train"]
        if "val" in ds:
            val = ds["val"]
        else:
            tr, va = val_split(len(train), val_frac, seed)
            train, val = Subset(train, tr.tolist()), Subset(train, va.tolist())
        x0, _ = sample_pair(train, 0, f"dataset: {name}: train")
        return DatasetSplits(train=train, val=val, test=ds["test"], num_classes=nc,
                             in_channels=int(x0.shape[0]) if x0.ndim >= 1 else 1,
                             image_size=int(x0.shape[-1]) if x0.ndim == 3 else 0, name=name, workers=workers)
    tensors = {k: _pair(v, f"dataset: {name}: {k}", nc) for k, v in parts.items()}
    x, y = tensors["train"]
    if "val" in tensors:
        (tx, ty), (vx, vy) = tensors["train"], tensors["val"]
    else:
        tr, va = val_split(len(x), val_frac, seed)
        tx, ty, vx, vy = x[tr], y[tr], x[va], y[va]
    shapes = {k: tuple(v[0].shape[1:]) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise UserError(f"dataset: {name}: the splits' samples differ in shape: "
                        + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    out = _to_device([tx, ty, vx, vy, *tensors["test"]], device)
    return DataSplits(*out, num_classes=nc, in_channels=int(x.shape[1]) if x.ndim >= 2 else 1,
                      image_size=int(x.shape[-1]) if x.ndim == 4 else 0, name=name)
