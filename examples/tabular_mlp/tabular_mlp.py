"""An MLP on scikit-learn's bundled breast-cancer table (569 rows, 30 features, 2 classes).

Freezing is not only for images: any network trained with cross-entropy on class labels works.
Copy this folder, replace ``MLP`` and ``load_data`` with your own, and keep their contracts
(see examples/README.md): the model gets ``in_channels`` = the number of features of a row.
"""
from __future__ import annotations

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from layerout.data import UserData


class MLP(nn.Module):
    """Three hidden layers and a head. It declares its units (``layerout_units``): each hidden
    layer is one unit and the head another; without the method the tool would find the same
    four from the top-level children."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(in_channels, width), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.fc3 = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def layerout_units(self) -> dict[str, str]:
        return {"fc1": "fc1", "fc2": "fc2", "fc3": "fc3", "head": "head"}

    def forward(self, x):
        return self.head(self.fc3(self.fc2(self.fc1(x))))


def load_data() -> UserData:
    """Rows standardized with the training rows' mean and std; a fixed, stratified 20% test split."""
    d = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(d.data, d.target, test_size=0.2, stratify=d.target,
                                                        random_state=0)
    scaler = StandardScaler().fit(x_train)
    return UserData(train=(scaler.transform(x_train), y_train), test=(scaler.transform(x_test), y_test),
                    num_classes=2)
