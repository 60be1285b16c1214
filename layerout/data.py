"""Datasets as whole tensors on the training device, plus a reproducible batch iterator.

``load_data`` returns normalized float tensors (N, C, H, W) for train / validation / test.
The validation split is held out of the training set by ``seed``; the test split is the
dataset's own (for digits, a fixed 20% independent of ``seed``). Torchvision datasets are
read through their ``.data`` / ``.targets`` arrays in one go: no per-sample PIL transforms.
Augmentation runs on whole batches on the device (``layerout.augment``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from layerout.augment import AugmentConfig, augment_batch
from layerout.checks import short
from layerout.errors import UserError

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "synthetic")
# datasets read from files (a data folder, downloaded there if allowed); the others need none:
# digits is bundled with scikit-learn, synthetic is generated
FILE_DATASETS = ("mnist", "cifar10", "cifar100")


def data_dir_note(dataset: str, data_dir: str | None) -> str | None:
    """The one-line note for a data folder given with a dataset that reads no files, else None."""
    if not data_dir or dataset in FILE_DATASETS or dataset not in DATASETS:
        return None
    what = "is bundled with scikit-learn" if dataset == "digits" else "is generated"
    return f"note: --data-dir {data_dir} is not used: the {dataset} dataset {what}, no files are read"
DEFAULT_DATA_DIR = "~/.cache/layerout-tune/data"
DIGITS_TEST_FRAC = 0.2
_DIGITS_SPLIT_SEED = 20231122  # fixed: the digits test split never depends on the run's seed

# what torchvision needs in the data folder, for the offline error message
_EXPECTED = {
    "mnist": "the folder MNIST/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
             "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or the same files .gz)",
    "cifar10": "cifar-10-python.tar.gz or the folder cifar-10-batches-py/ "
               "(data_batch_1..5, test_batch, batches.meta)",
    "cifar100": "cifar-100-python.tar.gz or the folder cifar-100-python/ (train, test, meta)",
}


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
) -> DataSplits:
    """Load a dataset as device-resident, normalized train/val/test tensors."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {short(name)}; allowed: {', '.join(DATASETS)}")
    if not 0.0 < val_frac <= 0.5:
        raise UserError(f"val_frac must be in (0, 0.5], got {val_frac}")
    if name == "synthetic":
        return _synthetic(device, val_frac, seed, synthetic_shape, synthetic_size or 4096)

    if name == "digits":
        x, y, tx, ty = _digits()
        aug = AugmentConfig()  # 8x8 digits: no crop or flip (a flipped digit is another glyph)
    else:
        x, y, tx, ty = _torchvision(name, data_root(data_dir), download)
        aug = AugmentConfig(crop_pad=4, flip=name != "mnist")  # the paper's recipe; no flip for digits
    aug.random_erasing = random_erasing
    num_classes = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}[name]

    tr, va = _val_split(len(x), val_frac, seed)
    x_tr = x[tr]
    mean = x_tr.mean(dim=(0, 2, 3))
    std = x_tr.std(dim=(0, 2, 3)).clamp_min(1e-6)
    norm = lambda t: (t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
    aug.pad_value = tuple((-mean / std).tolist())  # a black pixel, as padding before normalizing gives
    tensors = [norm(x_tr), y[tr], norm(x[va]), y[va], norm(tx), ty]
    tensors = _to_device(tensors, device)
    return DataSplits(*tensors, num_classes=num_classes, in_channels=x.shape[1],
                      image_size=x.shape[-1], name=name, synthetic=False, augment=aug,
                      mean=tuple(mean.tolist()), std=tuple(std.tolist()))


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


def _digits() -> tuple[torch.Tensor, ...]:
    """scikit-learn's bundled 8x8 digits (1797 images); test = fixed 20%."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(x)))
    n_test = int(round(len(x) * DIGITS_TEST_FRAC))
    test, rest = perm[:n_test].sort().values, perm[n_test:].sort().values
    return x[rest], y[rest], x[test], y[test]


def _torchvision(name: str, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    """Train and test tensors from torchvision's arrays; missing files -> one-line UserError."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
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
                        f"put {_EXPECTED[name]} into {root}, or {fix}") from None
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


def _synthetic(device, val_frac: float, seed: int, shape: tuple[int, int, int], size: int) -> DataSplits:
    """Random N(0,1) images and labels: for throughput measurement only (accuracy is meaningless)."""
    g = torch.Generator().manual_seed(seed)
    n_test = max(1, size // 5)
    x = torch.randn(size + n_test, *shape, generator=g)
    y = torch.randint(0, 10, (size + n_test,), generator=g)
    tr, va = _val_split(size, val_frac, seed)
    tensors = _to_device([x[tr], y[tr], x[va], y[va], x[size:], y[size:]], device)
    c = shape[0]
    return DataSplits(*tensors, num_classes=10, in_channels=c, image_size=shape[-1], name="synthetic",
                      synthetic=True, augment=AugmentConfig(crop_pad=4, flip=True),
                      mean=(0.0,) * c, std=(1.0,) * c)


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
