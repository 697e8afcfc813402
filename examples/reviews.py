"""Review sentiment: a text classifier over token ids, an `nn.Embedding` and a padding mask.

Reviews of different lengths are token ids of different lengths; proto2prod pads them per
batch and hands `forward` the mask it asks for (`mask`, True at real tokens). The reviews
are written by the code (templates, words in a fixed vocabulary), so training needs no
download; held-out reviews use products no training review mentions.

Copy this file to start your own text model. It imports torch and proto2prod only.
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch
from torch import nn

import proto2prod
from proto2prod import fields

SEED = 0
POSITIVE = tuple(
    "great excellent lovely superb reliable fantastic sturdy delightful wonderful solid "
    "brilliant perfect".split()
)
NEGATIVE = tuple(
    "awful terrible flimsy broken useless disappointing poor horrible noisy cheap dreadful "
    "faulty".split()
)
PRODUCTS = tuple(
    "kettle phone laptop chair lamp blender jacket camera speaker bicycle desk watch toaster "
    "backpack monitor mixer".split()
)
HELD_OUT = {"monitor", "mixer", "toaster", "backpack"}
"""Products only held-out reviews mention: the metric is on sentences never trained on."""
OPENERS = ("", "honestly", "well", "overall", "so far", "after a month")
TEMPLATES = (
    "{o} the {p} is {a}",
    "{o} this {p} feels {a} and {b}",
    "i think the {p} was {a}",
    "{o} my new {p} is really {a}",
    "what a {a} {p}",
    "the {p} arrived today and it is {a}",
    "{a} {p} , {b} design , would say it again : {a}",
)
WORD = re.compile(r"[a-z]+|[,.!?:]")
MAX_TOKENS = 64


def vocabulary() -> list[str]:
    """Every word the templates can write, after the padding (0) and unknown (1) ids."""
    words = {w for t in TEMPLATES for w in WORD.findall(t.replace("{", " ").replace("}", " "))}
    words |= {w for o in OPENERS for w in o.split()} | set(POSITIVE) | set(NEGATIVE) | set(PRODUCTS)
    words -= {"o", "p", "a", "b"}
    return ["<pad>", "<unk>", *sorted(words)]


VOCAB = {word: i for i, word in enumerate(vocabulary())}


def tokenize(text: str) -> list[int]:
    """Lower-cased words and punctuation as ids; unknown words are 1, at most MAX_TOKENS."""
    ids = [VOCAB.get(word, 1) for word in WORD.findall(text.lower())][:MAX_TOKENS]
    return ids or [1]


def reviews(count: int, *, held_out: bool, seed: int) -> tuple[list[str], list[int]]:
    """`count` reviews and their labels (1 positive); held-out ones name HELD_OUT products."""
    rng = random.Random(seed)
    products = sorted(HELD_OUT) if held_out else [p for p in PRODUCTS if p not in HELD_OUT]
    texts, labels = [], []
    for _ in range(count):
        label = rng.randrange(2)
        words = POSITIVE if label else NEGATIVE
        a, b = rng.sample(words, 2)
        text = rng.choice(TEMPLATES).format(o=rng.choice(OPENERS), p=rng.choice(products), a=a, b=b)
        texts.append(" ".join(text.split()))
        labels.append(label)
    return texts, labels


class Pooled(nn.Module):
    """Token embeddings, averaged over the real tokens (the mask), then a linear layer."""

    def __init__(self, vocab: int, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=0)
        self.head = nn.Linear(width, 2)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)


class Reviews(proto2prod.Model):
    """Says whether a product review is positive or negative. Type one."""

    name = "reviews"
    inputs = fields.Text(max_length=2000, name="review")
    outputs = fields.Label(classes=["negative", "positive"], name="sentiment")

    def network(self) -> nn.Module:
        return Pooled(len(VOCAB))

    def preprocess(self, text: str) -> torch.Tensor:
        return torch.tensor(tokenize(text), dtype=torch.int64)  # int64: for nn.Embedding

    def examples(self) -> list[Any]:
        return [
            "the kettle is superb",
            "honestly this lamp feels flimsy and noisy",
            "what a brilliant camera",
            "the toaster arrived today and it is broken",
        ]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        from proto2prod.batching import collate

        torch.manual_seed(SEED)
        texts, labels = reviews(1200 if quick else 4000, held_out=False, seed=SEED)
        test_texts, test_labels = reviews(400, held_out=True, seed=SEED + 1)
        net, epochs, batch = self.network(), 3 if quick else 8, 32
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        ys = torch.tensor(labels)
        progress.start(epochs * ((len(texts) + batch - 1) // batch), "training reviews")
        for _ in range(epochs):
            order = torch.randperm(len(texts)).tolist()
            for start in range(0, len(texts), batch):
                idx = order[start : start + batch]
                padded = collate([self.preprocess(texts[i]) for i in idx])
                loss = nn.functional.cross_entropy(net(*padded.args, **padded.masks), ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance(loss=loss.item())
        net.eval()
        with torch.inference_mode():
            held = collate([self.preprocess(t) for t in test_texts])
            guessed = net(*held.args, **held.masks).argmax(1)
        accuracy = float((guessed == torch.tensor(test_labels)).float().mean())
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={"accuracy": accuracy, "final_loss": loss.item()},
            params={"epochs": epochs, "batch_size": batch, "lr": 1e-2, "vocab": len(VOCAB)},
            reference_inputs=test_texts,
        )
