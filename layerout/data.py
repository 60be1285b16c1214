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
  when they fit (the fast path), batches cut from them (:class:`BatchIterator`);
* Datasets (your data function's ``torch.utils.data.Dataset``s, image folders): a
  ``DataLoader`` with worker processes, pinned memory and non-blocking copies
  (:class:`DatasetSplits`), for data that does not fit on the device or is read per sample.

Both draw the epoch's order from ``epoch_generator(seed, epoch)``, so a resumed run sees the
same batches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from layerout import userland
from layerout.augment import AugmentConfig, augment_batch
from layerout.checks import short
from layerout.choices import IMAGEFOLDER
from layerout.datasets import DATASETS, LoadArgs, reads_files
from layerout.errors import UserError


def data_dir_note(dataset: str, data_dir: str | None) -> str | None:
    """The one-line note for a data folder given with a dataset that reads no files, else None."""
    if not data_dir or reads_files(dataset) or dataset not in DATASETS:
        return None
    return f"note: --data-dir {data_dir} is not used: the {dataset} dataset {DATASETS[dataset].origin}, no files are read"
DEFAULT_DATA_DIR = "~/.cache/layerout-tune/data"
DEFAULT_IMAGE_SIZE = 64  # imagefolder images are resized and center-cropped to this size unless told
STATS_IMAGES = 256  # imagefolder: per-channel mean and std from this many training images
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
    tr, va = _val_split(len(x), val_frac, seed)
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


def _val_split(n: int, val_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): a permutation fixed by ``seed``."""
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_val = max(1, int(round(n * val_frac)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


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
            tr, va = _val_split(len(train), val_frac, seed)
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
        tr, va = _val_split(len(x), val_frac, seed)
        tx, ty, vx, vy = x[tr], y[tr], x[va], y[va]
    shapes = {k: tuple(v[0].shape[1:]) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise UserError(f"dataset: {name}: the splits' samples differ in shape: "
                        + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    out = _to_device([tx, ty, vx, vy, *tensors["test"]], device)
    return DataSplits(*out, num_classes=nc, in_channels=int(x.shape[1]) if x.ndim >= 2 else 1,
                      image_size=int(x.shape[-1]) if x.ndim == 4 else 0, name=name)


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
        tr, va = _val_split(len(train), val_frac, seed)
        train, val = Subset(train, tr.tolist()), Subset(train, va.tolist())
    aug = AugmentConfig(crop_pad=max(1, size // 8), flip=True, random_erasing=random_erasing,
                        pad_value=tuple((-mean / std).tolist()))
    return DatasetSplits(train=train, val=val, test=test, num_classes=len(plain.classes), in_channels=3,
                         image_size=size, name=name, workers=workers, augment=aug,
                         mean=tuple(mean.tolist()), std=tuple(std.tolist()))


# ---------------------------------------------------------------- batches
def epoch_generator(seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from (seed, epoch) only, so an epoch replays after a resume without saved RNG state."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 0x1A7E]).generate_state(2, np.uint32)
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


class BatchIterator:
    """Shuffled (optionally augmented) mini-batches of (x, y) for one epoch.

    All randomness comes from ``epoch_generator(seed, epoch)`` on the batch device; nothing
    synchronizes with the host per batch. ``device`` moves batches there (for splits that
    stayed on CPU); by default batches stay on the tensors' device.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, epoch: int = 0, seed: int = 0,
                 shuffle: bool = True, augment: AugmentConfig | None = None, drop_last: bool = False,
                 device: str | torch.device | None = None):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epoch, self.seed, self.shuffle, self.augment, self.drop_last = epoch, seed, shuffle, augment, drop_last
        self.device = torch.device(device) if device is not None else x.device

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.epoch, self.device)
        n = len(self.x)
        order = torch.randperm(n, generator=gen, device=self.device).to(self.x.device) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is None:
                xb, yb = self.x[sl], self.y[sl]
            else:
                xb, yb = self.x[order[sl]], self.y[order[sl]]
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            yield augment_batch(xb, gen, self.augment), yb


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, epoch: int = 0, seed: int = 0,
                    shuffle: bool = True, augment: AugmentConfig | None = None, drop_last: bool = False,
                    device: str | torch.device | None = None) -> BatchIterator:
    """Batches of one epoch, reproducible from (seed, epoch); see ``BatchIterator``."""
    return BatchIterator(x, y, batch_size, epoch, seed, shuffle, augment, drop_last, device)
