"""Text of a user's module (a model and a data function) that tests write into a folder outside the
repository, so that only the tool's own lookup (a space's folder, code paths) can import it.
``module_text(name)`` varies the class and function bodies per case."""
from __future__ import annotations

from pathlib import Path

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
'''


def write_module(folder: Path, name: str) -> Path:
    """Write the fixture module as ``folder/name.py``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(NET)
    return folder
