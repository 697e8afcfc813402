"""Text generation: a small byte-level transformer that continues a prompt, token by token.

The output is `fields.Text(stream=True)`, so proto2prod decodes: the network only maps token
ids `[B, T]` to next-token logits `[B, T, 257]`, the tokenizer is UTF-8 bytes (any text, no
vocabulary file), and the prompt and its settings (`max_new_tokens`, `temperature`,
`top_k`, `seed`) are the named inputs `generation.inputs()` gives. The service streams the
text from `POST /generate` and batches decoding steps across requests; `/predict` answers
with the whole text.

It trains on the Python documentation's topics that ship with the standard library
(`pydoc_data`, ~460 kB of English and code), holding out every tenth topic for the
validation loss (1.36 nats per byte); under three minutes on a 2-core CPU, seconds with
`--quick` (2.86: a model that runs, not one that writes well). Copy this file to
start your own generator; it imports torch and proto2prod only.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import proto2prod
from proto2prod import fields, generation

SEED = 0
CONTEXT = 64
WIDTH, HEADS, LAYERS = 128, 4, 3
VOCAB = generation.ByteTokenizer.vocab_size


Cache = tuple[torch.Tensor, torch.Tensor]


class Block(nn.Module):
    """Pre-norm causal self-attention and an MLP; keys and values of earlier positions may
    come from a cache (`past`), and the ones it computed go back (`present`)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(
            nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, past: Cache | None
    ) -> tuple[torch.Tensor, Cache]:
        batch, length, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, HEADS, WIDTH // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, dim]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        before = k.shape[2] - length
        causal = torch.ones(length, before + length, dtype=torch.bool, device=x.device)
        allowed = causal.tril(diagonal=before)[None] & mask[:, None, :]
        seen = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        x = x + self.out(seen.transpose(1, 2).reshape(batch, length, WIDTH))
        return x + self.mlp(self.norm2(x)), (k, v)


class TinyGPT(nn.Module):
    """Token and position embeddings, causal blocks, a next-token head, and a KV cache
    (proto2prod.generation.KV_CACHE): proto2prod reads a prompt once, then feeds one token
    per step. Causal attention never looks ahead, so the padding after a shorter sequence
    in a batch cannot change its logits."""

    def __init__(self, vocab: int = VOCAB) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, WIDTH)
        self.positions = nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, vocab)

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        past: list[Cache] | None = None,
    ) -> tuple[torch.Tensor, list[Cache]]:
        batch, length = ids.shape
        if positions is None:
            positions = torch.arange(length, device=ids.device).expand(batch, length)
        if mask is None:
            held = past[0][0].shape[2] if past else 0
            mask = torch.ones(batch, held + length, dtype=torch.bool, device=ids.device)
        x = self.tokens(ids) + self.positions(positions)
        present = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, mask, past[i] if past else None)
            present.append(cache)
        return self.head(self.norm(x)), present


class TextGen(proto2prod.Model):
    """Continues a prompt in the style of Python's documentation (trained on pydoc_data)."""

    name = "textgen"
    inputs = generation.inputs(max_new_tokens=512, default_new_tokens=80, temperature=0.7)
    outputs = fields.Text(stream=True, description="The continuation of the prompt.")
    context = CONTEXT

    def network(self) -> nn.Module:
        return TinyGPT()

    def tokenizer(self) -> generation.ByteTokenizer:
        return generation.ByteTokenizer()

    def examples(self) -> list[Any]:
        return [
            {"prompt": 'The "if" statement', "max_new_tokens": 24, "temperature": 0},
            {"prompt": "A list is", "max_new_tokens": 24, "temperature": 0.7, "seed": 1},
            {"prompt": "def ", "max_new_tokens": 16, "temperature": 0.9, "top_k": 20},
        ]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        torch.manual_seed(SEED)
        train_ids, held_ids = corpus()
        steps, batch = (40, 16) if quick else (700, 32)
        net = TinyGPT()
        opt = torch.optim.AdamW(net.parameters(), lr=4e-3, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=steps)
        loss_of = nn.CrossEntropyLoss()
        progress.start(steps)
        started = time.perf_counter()
        net.train()
        for _ in range(steps):
            x, y = windows(train_ids, batch)
            loss = loss_of(net(x)[0].reshape(-1, VOCAB), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            schedule.step()
            progress.advance(loss=loss.item())
        val_loss = validation_loss(net, held_ids, loss_of)
        return proto2prod.Trained(
            weights=net.state_dict(),
            metrics={
                "val_loss": val_loss,
                "val_bits_per_byte": val_loss / math.log(2),
                "train_seconds": time.perf_counter() - started,
            },
            params={"steps": steps, "batch": batch, "context": CONTEXT, "width": WIDTH},
        )


def corpus() -> tuple[torch.Tensor, torch.Tensor]:
    """The topics as bytes, each ended by the end-of-sequence id; every tenth held out."""
    from pydoc_data.topics import topics

    eos = generation.ByteTokenizer.eos_id
    train: list[int] = []
    held: list[int] = []
    for i, name in enumerate(sorted(topics)):
        (held if i % 10 == 9 else train).extend([*topics[name].encode("utf-8"), eos])
    return torch.tensor(train), torch.tensor(held)


def windows(ids: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(ids) - CONTEXT - 1, (batch,))
    x = torch.stack([ids[s : s + CONTEXT] for s in starts.tolist()])
    y = torch.stack([ids[s + 1 : s + CONTEXT + 1] for s in starts.tolist()])
    return x, y


def validation_loss(net: nn.Module, held: torch.Tensor, loss_of: nn.Module) -> float:
    """Mean next-byte cross-entropy (nats) over the held-out topics, in whole windows."""
    net.eval()
    count = (len(held) - 1) // CONTEXT
    x = held[: count * CONTEXT].reshape(count, CONTEXT)
    y = held[1 : count * CONTEXT + 1].reshape(count, CONTEXT)
    with torch.inference_mode():
        total = sum(
            float(loss_of(net(xs)[0].reshape(-1, VOCAB), ys.reshape(-1))) * len(xs)
            for xs, ys in zip(x.split(64), y.split(64), strict=True)
        )
    return total / count
