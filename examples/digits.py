"""Handwritten digits: a small CNN on scikit-learn's bundled 8x8 digits.

Copy this file to start your own model. It imports torch, numpy, scikit-learn's datasets
and proto2prod, and nothing from any UI or serving library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import proto2prod
from proto2prod import fields

SEED = 0
TEST_FRACTION = 0.2


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as 0-255 images, split into train and held-out sets with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images * (255.0 / 16.0)).astype(np.float32)  # 0-16 -> 0-255, as users send
    return train_test_split(
        images, data.target, test_size=TEST_FRACTION, random_state=SEED, stratify=data.target
    )


class Digits(proto2prod.Model):
    """Recognises a handwritten digit (0-9). Draw one, or upload a picture of one."""

    name = "digits"
    inputs = fields.Image(height=8, width=8, channels=1, name="image")
    outputs = fields.Label(classes=[str(d) for d in range(10)], top_k=3, name="digit")

    def network(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Map any greyscale image to the training range: 8x8, ink high, values 0-16.

        An 8x8 input is taken as it is (the dataset's framing). A larger one is a person's
        drawing or photo: dark ink on a light background is inverted, the ink's bounding
        box is centred in a square it fills, and it is shrunk by area averaging.
        """
        pixels = image[:, :, 0]
        if pixels.shape != (8, 8):
            pixels = _frame_drawing(pixels)
            pixels = self.inputs.fit(pixels[:, :, None])[:, :, 0]
            peak = float(pixels.max())
            pixels = pixels * (255.0 / peak) if peak > 0 else pixels
        return _as_input(pixels)

    def examples(self) -> list[Any]:
        _, x_test, _, y_test = load_split()
        picks = [int(np.flatnonzero(y_test == d)[0]) for d in (0, 3, 7, 8)]
        return [np.rint(x_test[i]).astype(int).tolist() for i in picks]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(SEED)
        x_train, x_test, y_train, y_test = load_split()
        xs = _as_input(x_train)
        ys = torch.from_numpy(y_train).long()
        epochs = 4 if quick else 15
        batch = 64
        net = self.network()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        steps_per_epoch = (len(xs) + batch - 1) // batch
        progress.start(epochs * steps_per_epoch, "training digits")
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), batch):
                idx = order[start : start + batch]
                loss = nn.functional.cross_entropy(net(xs[idx]), ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance(loss=loss.item())
        net.eval()
        with torch.inference_mode():
            accuracy = float((net(_as_input(x_test)).argmax(1).numpy() == y_test).mean())
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={"accuracy": accuracy, "final_loss": loss.item()},
            params={"epochs": epochs, "batch_size": batch, "lr": 2e-3, "seed": SEED},
            reference_inputs=[np.rint(x).astype(int).tolist() for x in x_test],
        )


def _as_input(pixels: np.ndarray) -> torch.Tensor:
    """0-255 images (..., 8, 8) -> the dataset's 0-16 range, with a channel axis."""
    return torch.from_numpy(pixels / (255.0 / 16.0)).float().unsqueeze(-3)


def _frame_drawing(pixels: np.ndarray) -> np.ndarray:
    """Ink high on a dark background, cropped to the ink and centred in a square."""
    if float(np.median(pixels)) > 127:  # dark ink on a light background: invert
        pixels = 255.0 - pixels
    ink = pixels > 0.2 * float(pixels.max()) if pixels.max() > 0 else pixels > 0
    if not ink.any():
        return np.zeros((8, 8), dtype=np.float32)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(crop.shape)  # the dataset's digits fill their 8x8 box edge to edge
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return square
