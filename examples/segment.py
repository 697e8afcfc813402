"""Finding shapes: segmentation and detection, an Image output (the mask) and a Boxes one.

A small fully convolutional network labels every pixel of a 32x32 picture as background,
square or circle; `postprocess` turns that into the two outputs: the mask as a picture
(0 background, 128 square, 255 circle) and one box per connected region, scored by the
network's mean confidence in it. The pictures are drawn by the code.

Copy this file to start a model whose answer is a picture or boxes. It imports torch,
numpy, scipy, Pillow and proto2prod only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import proto2prod
from proto2prod import fields
from proto2prod.fields.boxes import box, iou

SEED = 0
SIDE = 32
CLASSES = ("square", "circle")
GREY = (0, 128, 255)
"""The mask's value per class: background, square, circle."""
MIN_PIXELS = 6
"""A region smaller than this is noise, not a shape."""


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[str, tuple]]]:
    """A picture with 1-3 separate squares and circles, its class per pixel, and the boxes."""
    from PIL import Image, ImageDraw

    picture, classes = Image.new("L", (SIDE, SIDE), 0), Image.new("L", (SIDE, SIDE), 0)
    ink, mark = ImageDraw.Draw(picture), ImageDraw.Draw(classes)
    used, boxes = np.zeros((SIDE, SIDE), dtype=bool), []
    for _ in range(int(rng.integers(1, 4))):
        size = int(rng.integers(7, 12))
        x, y = (int(v) for v in rng.integers(0, SIDE - size, size=2))
        if used[max(0, y - 2) : y + size + 2, max(0, x - 2) : x + size + 2].any():
            continue
        used[y : y + size, x : x + size] = True
        kind = int(rng.integers(len(CLASSES)))
        corners = (x, y, x + size - 1, y + size - 1)
        shade = int(rng.integers(120, 256))
        (ink.rectangle if kind == 0 else ink.ellipse)(corners, fill=shade)
        (mark.rectangle if kind == 0 else mark.ellipse)(corners, fill=kind + 1)
        boxes.append((CLASSES[kind], (x, y, x + size, y + size)))
    noise = rng.normal(0, 12, size=(SIDE, SIDE))
    pixels = np.clip(np.asarray(picture, dtype=np.float32) + noise, 0, 255).astype(np.float32)
    return pixels, np.asarray(classes, dtype=np.int64), boxes


def dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[list[tuple]]]:
    rng = np.random.default_rng(seed)
    scenes = [scene(rng) for _ in range(count)]
    return (
        np.stack([s[0] for s in scenes]),
        np.stack([s[1] for s in scenes]),
        [s[2] for s in scenes],
    )


def regions(probs: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """From (3, H, W) probabilities: the class of every pixel, each connected region of
    shape pixels taking the class its pixels vote for most, and one box per region."""
    from scipy import ndimage

    decided = probs.argmax(0)
    labelled, _ = ndimage.label(decided != 0)
    classes, found = np.zeros_like(decided), []
    for region, where in enumerate(ndimage.find_objects(labelled), start=1):
        inside = labelled[where] == region
        if where is None or inside.sum() < MIN_PIXELS:
            continue
        votes = [float(probs[k][where][inside].sum()) for k in range(1, 1 + len(CLASSES))]
        k = 1 + int(np.argmax(votes))
        classes[where][inside] = k
        ys, xs = where
        score = float(probs[k][where][inside].mean())
        found.append(box(CLASSES[k - 1], score, (xs.start, ys.start, xs.stop, ys.stop)))
    return classes, sorted(found, key=lambda b: -b["score"])


class Segmenter(nn.Module):
    """Dilated convolutions: every pixel sees ~30 px around it, the resolution is kept."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for dilation in (2, 4, 8):
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1 + len(CLASSES), 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


class Segment(proto2prod.Model):
    """Finds the squares and circles in a picture: their outline (a mask) and their boxes."""

    name = "segment"
    inputs = fields.Image(height=SIDE, width=SIDE, channels=1, name="image")
    outputs = {
        "mask": fields.Image(height=SIDE, width=SIDE, channels=1),
        "boxes": fields.Boxes(classes=list(CLASSES), max_boxes=10),
    }

    def network(self) -> nn.Module:
        return Segmenter()

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resized to 32x32, shapes bright on dark (a drawing's dark ink is inverted), 0-1."""
        pixels = self.inputs.fit(image)[:, :, 0]
        if float(np.median(pixels)) > 127:
            pixels = 255.0 - pixels
        return torch.from_numpy(pixels / 255.0).float().unsqueeze(0)

    def postprocess(self, row: torch.Tensor) -> dict[str, Any]:
        """Per-pixel logits (3, H, W) -> the class mask as a picture, and boxes."""
        classes, boxes = regions(row.softmax(0).numpy())
        mask = np.asarray(GREY, dtype=np.float32)[classes]
        return {"mask": fields.Image.to_png_base64(mask), "boxes": boxes}

    def examples(self) -> list[Any]:
        pictures, _, _ = dataset(4, seed=SEED + 7)
        return [np.rint(p).astype(int).tolist() for p in pictures]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(SEED)
        pictures, classes, _ = dataset(1200 if quick else 4000, seed=SEED)
        test_pictures, test_classes, test_boxes = dataset(200, seed=SEED + 1)
        xs = torch.from_numpy(pictures / 255.0).float().unsqueeze(1)
        ys = torch.from_numpy(classes)
        net, epochs, batch = self.network(), 6 if quick else 12, 32
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        progress.start(epochs * ((len(xs) + batch - 1) // batch), "training segment")
        for _ in range(epochs):
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
            probs = net(torch.from_numpy(test_pictures / 255.0).float().unsqueeze(1)).softmax(1)
        found = [regions(p) for p in probs.numpy()]
        metrics = {
            "mean_iou": _mean_iou(np.stack([f[0] for f in found]), test_classes),
            "box_f1": _box_f1([f[1] for f in found], test_boxes),
            "final_loss": loss.item(),
        }
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics=metrics,
            params={"epochs": epochs, "batch_size": batch, "lr": 3e-3, "seed": SEED},
            reference_inputs=[np.rint(p).astype(int).tolist() for p in test_pictures],
        )


def _mean_iou(guessed: np.ndarray, truth: np.ndarray) -> float:
    """The mean over the two shape classes of pixel intersection over union."""
    scores = []
    for k in range(1, 1 + len(CLASSES)):
        both, either = ((guessed == k) & (truth == k)).sum(), ((guessed == k) | (truth == k)).sum()
        scores.append(both / either if either else 1.0)
    return float(np.mean(scores))


def _box_f1(found: list[list[dict[str, Any]]], truth: list[list[tuple]]) -> float:
    """F1 of the boxes found against the drawn ones: a hit has its label and IoU >= 0.5."""
    hits = sum(
        sum(
            any(b["label"] == name and iou(b["box"], corners) >= 0.5 for b in got)
            for name, corners in want
        )
        for got, want in zip(found, truth, strict=True)
    )
    guessed, real = sum(len(g) for g in found), sum(len(w) for w in truth)
    return 2 * hits / (guessed + real) if guessed + real else 1.0
