"""The built-in datasets: one registration each (``register_dataset``) with everything the code
needs to know about it: its loader, class count, input shape, whether it is normalized, its
augmentation, the files it reads and the model ``python -m layerout.train`` picks for it.

Written without torch so that the command lines list and check the names before importing it;
a loader is given as an import path (``module:function``, imported when the data is loaded) or
as a function. Your own dataset can be registered the same way from your code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from layerout.registry import Registry, resolved


@dataclass(frozen=True)
class LoadArgs:
    """What a loader is told: the data folder and whether it may download there; the run's seed,
    the input shape its model wants and the number of training images (generated datasets)."""

    root: Path
    download: bool
    seed: int
    shape: tuple[int, int, int]
    size: int
    classes: int


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset known by name. ``loader(LoadArgs)`` returns (train_x, train_y, test_x, test_y):
    float images (N, C, H, W), int64 labels; the validation split is held out of the training
    split by the run's seed. ``normalize``: per-channel mean and std of the training split (else
    the images are used as they are). ``files``: what the data folder must hold (the error when
    they are missing says it); None when it reads no files, and ``origin`` says why (the note
    for a needless ``--data-dir``)."""

    name: str
    classes: int
    shape: tuple[int, int, int]  # channels, height, width (a generated dataset takes its model's)
    loader: str | Callable[[LoadArgs], tuple[Any, Any, Any, Any]]
    default_model: str
    files: str | None = None
    origin: str = "is generated"
    normalize: bool = True
    crop_pad: int = 0  # training augmentation: random crop after this much padding, horizontal flips
    flip: bool = False
    synthetic: bool = False  # random data: throughput only, accuracy is meaningless

    @property
    def channels(self) -> int:
        return self.shape[0]

    def load(self, args: LoadArgs) -> tuple[Any, Any, Any, Any]:
        """The loader's (train_x, train_y, test_x, test_y), its module imported now if given by path."""
        return resolved(self.loader)(args)


DATASETS: Registry = Registry("dataset")  # name -> BuiltinDataset, in the order --help lists them


def register_dataset(dataset: BuiltinDataset) -> BuiltinDataset:
    """Make ``dataset.name`` a dataset every command line, space and ``load_data`` knows."""
    return DATASETS.add(dataset.name, dataset)


def reads_files(name: str) -> bool:
    """Whether the built-in dataset ``name`` reads files from the data folder (downloaded there if allowed)."""
    entry = DATASETS.get(name)
    return entry is not None and entry.files is not None


register_dataset(BuiltinDataset(
    "digits", classes=10, shape=(1, 8, 8), loader="layerout.data:load_digits", default_model="digits_cnn",
    origin="is bundled with scikit-learn"))  # 8x8 digits: no crop or flip (a flipped digit is another glyph)
register_dataset(BuiltinDataset(
    "mnist", classes=10, shape=(1, 32, 32), loader="layerout.data:load_mnist", default_model="mnist_shallow",
    files="the folder MNIST/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
          "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or the same files .gz)",
    crop_pad=4))  # the paper's recipe; no flip for digits
register_dataset(BuiltinDataset(
    "cifar10", classes=10, shape=(3, 32, 32), loader="layerout.data:load_cifar10", default_model="resnet20",
    files="cifar-10-python.tar.gz or the folder cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
    crop_pad=4, flip=True))
register_dataset(BuiltinDataset(
    "cifar100", classes=100, shape=(3, 32, 32), loader="layerout.data:load_cifar100", default_model="resnet20",
    files="cifar-100-python.tar.gz or the folder cifar-100-python/ (train, test, meta)", crop_pad=4, flip=True))
register_dataset(BuiltinDataset(
    "synthetic", classes=10, shape=(3, 32, 32), loader="layerout.data:load_synthetic", default_model="resnet20",
    normalize=False, crop_pad=4, flip=True, synthetic=True))
