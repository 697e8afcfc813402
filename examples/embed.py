"""Digit embeddings: a Tensor in (8x8 pixels as 64 numbers), a Tensor out (a 16-d vector).

The network maps a digit to a unit vector; digits alike point alike, so a nearest-neighbour
search over the vectors finds the same digit (the held-out metric: recall@1 against the
training digits). Trained as a classifier over cosine similarity to one learned centre per
class (the centres are training state, not part of `network()`, so the service serves the
embedding alone). Data: scikit-learn's bundled digits.

Copy this file to start an embedding model. It imports torch, numpy, scikit-learn's
datasets and proto2prod only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import proto2prod
from proto2prod import fields

SEED = 0
WIDTH = 16
SCALE = 10.0
"""Cosine similarities times this are the logits (a temperature for the training loss)."""


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as 64 values 0-16 (the dataset's own range), split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    return train_test_split(
        data.data.astype(np.float32),
        data.target,
        test_size=0.2,
        random_state=SEED,
        stratify=data.target,
    )


class Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, WIDTH))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.layers(pixels / 16.0), dim=-1)


class Embed(proto2prod.Model):
    """Maps a digit (64 pixel values, 0-16, row by row) to a 16-d unit vector."""

    name = "embed"
    inputs = fields.Tensor(shape=[64], name="pixels")
    outputs = fields.Tensor(shape=[WIDTH], name="embedding")

    def network(self) -> nn.Module:
        return Embedder()

    def examples(self) -> list[Any]:
        _, x_test, _, y_test = load_split()
        return [x_test[int(np.flatnonzero(y_test == d)[0])].tolist() for d in (0, 3, 7)]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(SEED)
        x_train, x_test, y_train, y_test = load_split()
        xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
        net, centres = self.network(), nn.Parameter(torch.randn(10, WIDTH))
        epochs, batch = 10 if quick else 30, 64
        opt = torch.optim.Adam([*net.parameters(), centres], lr=3e-3)
        progress.start(epochs * ((len(xs) + batch - 1) // batch), "training embed")
        for _ in range(epochs):
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), batch):
                idx = order[start : start + batch]
                logits = SCALE * net(xs[idx]) @ nn.functional.normalize(centres, dim=-1).T
                loss = nn.functional.cross_entropy(logits, ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance(loss=loss.item())
        net.eval()
        with torch.inference_mode():
            known, asked = net(xs), net(torch.from_numpy(x_test))
        nearest = (asked @ known.T).argmax(1)
        recall = float((ys[nearest].numpy() == y_test).mean())
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={"recall_at_1": recall, "final_loss": loss.item()},
            params={"epochs": epochs, "batch_size": batch, "lr": 3e-3, "width": WIDTH},
            reference_inputs=[x.tolist() for x in x_test],
        )
