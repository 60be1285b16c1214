"""A custom CNN on scikit-learn's bundled 8x8 digits: the model and the data function a search names.

Copy this folder, replace ``SmallCNN`` and ``load_data`` with your own, and keep their contracts:

* the model is an ``nn.Module`` class (or a function returning a model); its parameters named
  ``num_classes`` and ``in_channels`` get the dataset's number of classes and the size of a
  sample's first dimension (here the images' one channel);
* the data function takes no arguments and returns ``UserData(train, test, num_classes)``, each
  split an ``(inputs, labels)`` pair of tensors or arrays (or a torch ``Dataset``). A share of
  ``train`` (``val_frac`` in the space) is held out for validation by the run's seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from layerout.data import UserData


class SmallCNN(nn.Module):
    """Three conv layers with BatchNorm and a linear head. It declares no units, so the tool groups
    each conv with the BatchNorm after it: units conv1, conv2, conv3, head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)  # 8x8 -> 4x4
        self.bn3 = nn.BatchNorm2d(64)
        self.head = nn.Linear(64 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.head(x.flatten(1))


def load_data() -> UserData:
    """The 1,797 digits as (N, 1, 8, 8) images scaled to [0, 1]; a fixed, stratified 20% test split."""
    d = load_digits()
    x = d.data.reshape(-1, 1, 8, 8).astype("float32") / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.2, stratify=d.target,
                                                        random_state=0)
    return UserData(train=(x_train, y_train), test=(x_test, y_test), num_classes=10)
