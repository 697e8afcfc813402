"""A user's own model definition, kept outside proto2prod: iris species from 4 measurements.

The tests copy this folder somewhere else and use proto2prod from there, as a user would:
beside it lie files named like proto2prod's own parts (service.py, registry.py, prototype/),
which must never be imported in their place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import proto2prod
from proto2prod import fields

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32),
        data.target,
        test_size=0.3,
        random_state=0,
        stratify=data.target,
    )
    return x_train, x_test, y_train, y_test


class Iris(proto2prod.Model):
    """Tells the iris species from sepal and petal measurements (cm)."""

    name = "iris"
    inputs = fields.Table(features=FEATURES, name="flower")
    outputs = fields.Label(classes=SPECIES, name="species")

    def network(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def examples(self) -> list[Any]:
        return [
            dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)),
            dict(zip(FEATURES, [6.4, 3.2, 4.5, 1.5], strict=True)),
            dict(zip(FEATURES, [6.3, 3.3, 6.0, 2.5], strict=True)),
        ]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(0)
        x_train, x_test, y_train, y_test = load_split()
        net = self.network()
        xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
        steps = 300
        opt = torch.optim.Adam(net.parameters(), lr=3e-2)
        progress.start(steps, "training iris")
        for _ in range(steps):
            loss = nn.functional.cross_entropy(net(xs), ys)
            opt.zero_grad()
            torch.autograd.backward(loss)  # typed, unlike Tensor.backward (mypy --strict)
            opt.step()
            progress.advance(loss=loss.item())
        with torch.inference_mode():
            predicted = net(torch.from_numpy(x_test)).argmax(1).numpy()
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={"accuracy": float((predicted == y_test).mean())},
            params={"steps": steps},
        )
