"""Text of a user's module (a model and a data function) that tests write into a folder outside the
repository, so that only the tool's own lookup (a space's folder, code paths) can import it.
``module_text(name)`` varies the class and function bodies per case."""
from __future__ import annotations

from pathlib import Path

LABEL_DEEP_AT = 2001  # of the 4200 items of label_deep_in_the_data(): not one the check before training reads

NET = '''
import os

import torch
from sklearn.datasets import load_digits
from torch import nn

from layerout.data import UserData


class FixtureNet(nn.Module):
    """A conv with its BatchNorm, a body, a head: automatic units stem+bn, body, head."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(16 * 16, num_classes)

    def forward(self, x):
        return self.head(self.body(self.bn(self.stem(x))))


class WrongHead(FixtureNet):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__(num_classes, in_channels)
        self.head = nn.Linear(32, num_classes)  # the body gives 256 features: forward fails


def not_a_model():
    return 42


def digits(n_train=1400):
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    y = torch.tensor(d.target)
    return UserData(train=(x[:n_train], y[:n_train]), test=(x[1400:], y[1400:]), num_classes=10)


def digits_as_tuple():
    d = digits()
    return d.train[0], d.train[1], d.test[0], d.test[1], 10


def not_data():
    return "digits"


def only_in_the_driver():
    if os.getpid() != int(os.environ["UFIX_DRIVER_PID"]):
        raise RuntimeError("this data exists only in the driver")
    return digits()


class DigitsItems(torch.utils.data.Dataset):
    """The digits as a Dataset read item by item (no label array: the check before training reads items)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class DigitsWithTargets(DigitsItems):
    """Its labels also as an array, ``targets`` (as torchvision's Datasets have them); ``reads``: items read."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.targets = y
        self.reads = 0

    def __getitem__(self, i):
        self.reads += 1
        return super().__getitem__(i)


def digits_items(bad_at=None, repeat=1, kind=DigitsItems):
    """The digits' training rows ``repeat`` times as a Dataset, item ``bad_at`` labelled 12 (10 classes)."""
    d = digits()
    x, y = d.train[0].repeat(repeat, 1, 1, 1), d.train[1].repeat(repeat).clone()
    if bad_at is not None:
        y[bad_at] = 12
    return UserData(train=kind(x, y), test=kind(*d.test), num_classes=10)


LABEL_DEEP_AT = @LABEL_DEEP_AT@


def label_deep_in_the_data():
    return digits_items(bad_at=LABEL_DEEP_AT, repeat=3)
'''


def write_module(folder: Path, name: str) -> Path:
    """Write the fixture module as ``folder/name.py``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(NET.replace("@LABEL_DEEP_AT@", str(LABEL_DEEP_AT)))
    return folder
