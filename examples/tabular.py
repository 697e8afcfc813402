"""Wine cultivars from 13 chemical measurements: a small MLP on scikit-learn's wine data.

The standardisation (feature means and spreads) lives in the network as buffers, so it
travels with the weights in safetensors and every front end sends raw measurements.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import proto2prod
from proto2prod import fields

SEED = 0
FEATURES = [
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280/od315_of_diluted_wines",
    "proline",
]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    data = load_wine()
    assert list(data.feature_names) == FEATURES, "scikit-learn renamed the wine features"
    return train_test_split(
        data.data.astype(np.float32),
        data.target,
        test_size=0.25,
        random_state=SEED,
        stratify=data.target,
    )


class Standardize(nn.Module):
    """(x - mean) / std with the training set's statistics, stored as buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Wine(proto2prod.Model):
    """Tells which of three cultivars a wine comes from, given its chemical analysis."""

    name = "wine"
    inputs = fields.Table(features=FEATURES, name="measurements")
    outputs = fields.Label(classes=["class_0", "class_1", "class_2"], name="cultivar")

    def network(self) -> nn.Sequential:
        return nn.Sequential(
            Standardize(len(FEATURES)),
            nn.Linear(len(FEATURES), 32),
            nn.ReLU(),
            nn.Linear(32, 3),
        )

    def examples(self) -> list[Any]:
        _, x_test, _, y_test = load_split()
        picks = [int(np.flatnonzero(y_test == c)[0]) for c in range(3)]
        return [
            {f: round(float(v), 4) for f, v in zip(FEATURES, x_test[i], strict=True)} for i in picks
        ]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(SEED)
        x_train, x_test, y_train, y_test = load_split()
        net = self.network()
        scale = net[0]
        assert isinstance(scale, Standardize)
        scale.mean.copy_(torch.from_numpy(x_train.mean(0)))
        scale.std.copy_(torch.from_numpy(x_train.std(0) + 1e-6))
        xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
        steps = 60 if quick else 300
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        progress.start(steps, "training wine")
        for _ in range(steps):
            loss = nn.functional.cross_entropy(net(xs), ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
            progress.advance(loss=loss.item())
        with torch.inference_mode():
            predicted = net(torch.from_numpy(x_test)).argmax(1).numpy()
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={"accuracy": float((predicted == y_test).mean()), "final_loss": loss.item()},
            params={"steps": steps, "lr": 1e-2, "hidden": 32, "seed": SEED},
            reference_inputs=[row.tolist() for row in x_test],
        )
