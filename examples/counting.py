"""Counting shapes: two named inputs (a picture and a question), two named outputs.

    inputs = {"image": fields.Image(...), "shape": fields.Text(...)}
    outputs = {"count": fields.Number(), "present": fields.Label(classes=["no", "yes"])}

"How many circles are there?": the picture goes through a small CNN, the shape asked
about through an embedding (an int64 id), and the network answers both outputs at once,
as a dict keyed by their names. The pictures are drawn by the code: 32x32, up to four
squares, circles and triangles.

Copy this file to start a model with several inputs and outputs. It imports torch, numpy,
Pillow and proto2prod only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import proto2prod
from proto2prod import fields
from proto2prod.errors import InvalidInput

SEED = 0
SIDE = 32
SHAPES = ("square", "circle", "triangle")
MAX_COUNT = 4


def draw(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A 32x32 picture (ink 255 on 0) with 0-4 shapes that do not touch, and their kinds."""
    from PIL import Image, ImageDraw

    picture = Image.new("L", (SIDE, SIDE), 0)
    pen = ImageDraw.Draw(picture)
    kinds, taken = [], np.zeros((SIDE, SIDE), dtype=bool)
    for _ in range(int(rng.integers(0, MAX_COUNT + 1))):
        for _attempt in range(20):
            size = int(rng.integers(6, 10))
            x, y = (int(v) for v in rng.integers(0, SIDE - size, size=2))
            if not taken[max(0, y - 1) : y + size + 1, max(0, x - 1) : x + size + 1].any():
                break
        else:
            continue
        taken[y : y + size, x : x + size] = True
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        box = (x, y, x + size - 1, y + size - 1)
        if kind == "square":
            pen.rectangle(box, fill=255)
        elif kind == "circle":
            pen.ellipse(box, fill=255)
        else:
            pen.polygon(
                [(x, y + size - 1), (x + size - 1, y + size - 1), (x + size // 2, y)], fill=255
            )
        kinds.append(kind)
    return np.asarray(picture, dtype=np.float32), kinds


def dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pictures, a question (a shape id) per picture, and how many of that shape it shows."""
    rng = np.random.default_rng(seed)
    pictures, asked, counts = [], [], []
    for _ in range(count):
        picture, kinds = draw(rng)
        shape = int(rng.integers(len(SHAPES)))
        pictures.append(picture)
        asked.append(shape)
        counts.append(kinds.count(SHAPES[shape]))
    return np.stack(pictures), np.array(asked), np.array(counts, dtype=np.float32)


class Counter(nn.Module):
    """A CNN for the picture, an embedding for the question, one head per output."""

    def __init__(self) -> None:
        super().__init__()
        self.see = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.ask = nn.Embedding(len(SHAPES), 32)
        self.mix = nn.Sequential(nn.Linear(32 * 4 * 4 + 32, 64), nn.ReLU())
        self.count = nn.Linear(64, 1)
        self.present = nn.Linear(64, 2)

    def forward(self, image: torch.Tensor, shape: torch.Tensor) -> dict[str, torch.Tensor]:
        both = self.mix(torch.cat([self.see(image), self.ask(shape)], dim=1))
        return {"count": self.count(both), "present": self.present(both)}


class Counting(proto2prod.Model):
    """Counts the squares, circles or triangles in a picture. Upload one, name a shape."""

    name = "counting"
    inputs = {
        "image": fields.Image(height=SIDE, width=SIDE, channels=1),
        "shape": fields.Text(max_length=20, description="square, circle or triangle"),
    }
    outputs = {"count": fields.Number(), "present": fields.Label(classes=["no", "yes"])}

    def network(self) -> nn.Module:
        return Counter()

    def preprocess(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The picture resized to 32x32 (ink high, 0-1) and the shape's id, by keyword."""
        shape = item["shape"].strip().lower().removesuffix("s")
        if shape not in SHAPES:
            raise InvalidInput(
                "shape",
                f"'{item['shape']}' is no shape it knows",
                "one of square, circle, triangle",
                key="shape",
            )
        pixels = self.inputs["image"].fit(item["image"])[:, :, 0]
        if float(np.median(pixels)) > 127:  # dark shapes on light paper: invert
            pixels = 255.0 - pixels
        return {
            "image": torch.from_numpy(pixels / 255.0).float().unsqueeze(0),
            "shape": torch.tensor(SHAPES.index(shape)),
        }

    def postprocess(self, row: dict[str, torch.Tensor]) -> dict[str, Any]:
        """A count is a whole number, never below zero."""
        count = max(0, round(float(row["count"].item())))
        return {"count": float(count), "present": self.outputs["present"].encode(row["present"])}

    def examples(self) -> list[Any]:
        pictures, _, _ = dataset(4, seed=SEED + 7)
        questions = ["circle", "square", "triangle", "circle"]
        return [
            {"image": np.rint(p).astype(int).tolist(), "shape": q}
            for p, q in zip(pictures, questions, strict=True)
        ]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(SEED)
        pictures, asked, counts = dataset(4000 if quick else 8000, seed=SEED)
        test_pictures, test_asked, test_counts = dataset(500, seed=SEED + 1)
        xs = torch.from_numpy(pictures / 255.0).float().unsqueeze(1)
        qs, ys = torch.from_numpy(asked).long(), torch.from_numpy(counts)
        net, epochs, batch = self.network(), 10 if quick else 15, 64
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        progress.start(epochs * ((len(xs) + batch - 1) // batch), "training counting")
        for _ in range(epochs):
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), batch):
                idx = order[start : start + batch]
                out = net(xs[idx], qs[idx])
                loss = nn.functional.mse_loss(out["count"][:, 0], ys[idx])
                loss = loss + nn.functional.cross_entropy(out["present"], (ys[idx] > 0).long())
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance(loss=loss.item())
        net.eval()
        with torch.inference_mode():
            out = net(
                torch.from_numpy(test_pictures / 255.0).float().unsqueeze(1),
                torch.from_numpy(test_asked).long(),
            )
        guessed = out["count"][:, 0].round().clamp(min=0).numpy()
        present = out["present"].argmax(1).numpy() == (test_counts > 0)
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={
                "count_accuracy": float((guessed == test_counts).mean()),
                "count_mae": float(np.abs(guessed - test_counts).mean()),
                "present_accuracy": float(present.mean()),
            },
            params={"epochs": epochs, "batch_size": batch, "lr": 2e-3, "seed": SEED},
            reference_inputs=[
                {"image": np.rint(p).astype(int).tolist(), "shape": SHAPES[q]}
                for p, q in zip(test_pictures[:300], test_asked[:300], strict=True)
            ],
        )
