"""Generation: a model whose output is `fields.Text(stream=True)` writes its text token by token.

The definition gives what only it knows: `tokenizer()` (text <-> token ids, and the
end-of-sequence id), `network()` mapping token ids `[B, T]` to next-token logits
`[B, T, V]` (it may ask for the padding mask by naming `mask` in `forward`), and `context`,
the longest sequence the network takes (older tokens slide out of the window). The prompt
and the generation settings are ordinary named inputs (`inputs()` gives the usual ones with
their bounds); `preprocess` turns an item into a `Prompt`.

proto2prod does the decoding. `Decoder.step` runs the network once over many sequences,
each right-padded: with causal attention, padding after a sequence never changes its
logits, so a sequence's text does not depend on which others shared its steps (up to float
rounding). Each sequence samples with its own settings and its own random generator, so
temperature 0, or a fixed seed, gives the same text every time, everywhere. The service's
step batcher (service/stepping.py) calls `step` across requests, letting sequences join and
leave between steps; the Predictor, the prototype and MLflow call `generate` and `stream`.
A network may keep a KV cache (its `forward` names a `past` parameter; the contract is
`KV_CACHE` below): then a sequence's first step reads its window once (prefill) and each
later step feeds only its newest token, with every sequence's cached keys and values
gathered into the batch; a network without one recomputes its window every step.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from proto2prod.errors import InvalidInput
from proto2prod.fields import Field, Number, Text

if TYPE_CHECKING:
    import torch
    from torch import nn

RANDOM_SEED = -1
"""`seed` = -1: a fresh random seed for each request."""


KV_CACHE = """`forward(ids, mask, positions, past)` -> `(logits, present)`:
- `ids` [B, T]: the new tokens (a prefill's right-padded window, or each sequence's newest);
- `positions` [B, T]: their positions in the sequence (for position embeddings);
- `past`: None (prefill), or per layer `(keys, values)` [B, heads, P, dim] cached so far;
- `mask` [B, P + T]: which of the past and new positions are real (attend to those only,
  and causally: a new token at `P + t` sees keys up to `P + t`);
- `present`: per layer `(keys, values)` [B, heads, P + T, dim], past then new."""


class Tokenizer(Protocol):
    """Text to token ids and back; `eos_id` ends a sequence (it is never shown as text)."""

    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255 and 256 as end of sequence: any text, no vocabulary file.
    A character split across tokens is shown once its last byte has come."""

    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Prompt:
    """What a generative definition's `preprocess` gives: the prompt's ids and how to go on."""

    ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float = 0.0
    """0: always the most likely token."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0: among all."""
    seed: int = RANDOM_SEED


def inputs(
    *,
    max_prompt_chars: int = 2000,
    max_new_tokens: int = 256,
    default_new_tokens: int = 64,
    temperature: float = 0.8,
) -> dict[str, Field]:
    """The usual named inputs of a generative model: the prompt, and its settings with
    bounds and defaults (a request may give the prompt alone)."""
    return {
        "prompt": Text(max_length=max_prompt_chars, description="The text to continue."),
        "max_new_tokens": Number(
            minimum=1,
            maximum=max_new_tokens,
            integer=True,
            default=min(default_new_tokens, max_new_tokens),
            description="The most tokens to generate.",
        ),
        "temperature": Number(
            minimum=0,
            maximum=2,
            default=temperature,
            description="0: always the most likely token (the same text every time).",
        ),
        "top_k": Number(
            minimum=0,
            maximum=100_000,
            integer=True,
            default=0,
            description="Sample among the k most likely tokens; 0: among all.",
        ),
        "seed": Number(
            minimum=RANDOM_SEED,
            maximum=2**31 - 1,
            integer=True,
            default=RANDOM_SEED,
            description="The same seed gives the same text; -1: a random one.",
        ),
    }


def prompt_of(tokenizer: Tokenizer, item: Mapping[str, Any]) -> Prompt:
    """The default `preprocess` of a generative model: tokenize `prompt`, read the settings
    (named as `inputs()` names them; those a definition leaves out take its defaults)."""
    ids = tokenizer.encode(item["prompt"])
    if not ids:
        raise InvalidInput("prompt", "it has no tokens", "a prompt the tokenizer can read")
    return Prompt(
        tuple(ids),
        int(item.get("max_new_tokens", 64)),
        float(item.get("temperature", 0.0)),
        int(item.get("top_k", 0)),
        int(item.get("seed", RANDOM_SEED)),
    )


class Continuation:
    """One prompt being continued: its tokens, its own random generator, its text so far."""

    def __init__(self, prompt: Prompt, tokenizer: Tokenizer) -> None:
        self.prompt = prompt
        self.tokenizer = tokenizer
        self.new: list[int] = []
        self.text = ""
        """The text of the new tokens, as far as it decodes whole."""
        self.finish_reason: str | None = None
        """`stop` (the end-of-sequence token) or `length` (max_new_tokens), once finished."""
        self._random: random.Random | None = None
        self.cache: torch.Tensor | None = None
        """A caching network's keys and values: [layers, 2, heads, room, dim]."""
        self.cached = 0
        """Positions held in `cache`."""

    def window(self, context: int) -> list[int]:
        ids = [*self.prompt.ids, *self.new]
        return ids[-context:] if context else ids

    @property
    def last(self) -> int:
        """The newest token: the one a caching network has not seen yet."""
        return self.new[-1] if self.new else self.prompt.ids[-1]

    def draw(self) -> float:
        """A uniform draw in [0, 1) from this sequence's own generator (seeded)."""
        if self._random is None:
            seed = self.prompt.seed if self.prompt.seed != RANDOM_SEED else secrets.randbits(62)
            self._random = random.Random(seed)
        return self._random.random()

    def advance(self, token: int) -> str:
        """Take the next token; the text it adds (empty while a character is incomplete)."""
        if token == self.tokenizer.eos_id:
            self.finish_reason = "stop"
            return ""
        self.new.append(token)
        if len(self.new) >= self.prompt.max_new_tokens:
            self.finish_reason = "length"
        text = self.tokenizer.decode(self.new)
        if text.endswith("\ufffd") and self.finish_reason is None:
            return ""  # part of a character: wait for the rest
        chunk, self.text = text[len(self.text) :], text
        return chunk

    @property
    def counts(self) -> dict[str, int]:
        return {"prompt_tokens": len(self.prompt.ids), "completion_tokens": len(self.new)}


class Decoder:
    """One decoding step over many sequences: the network once, each its next token."""

    def __init__(
        self,
        network: nn.Module,
        tokenizer: Tokenizer,
        *,
        context: int,
        device: torch.device,
        takes_mask: bool,
        takes_past: bool = False,
    ) -> None:
        self.network = network
        self.tokenizer = tokenizer
        self.context = context
        self.device = device
        self.takes_mask = takes_mask
        self.takes_past = takes_past
        """The network keeps a KV cache (`KV_CACHE`)."""

    def start(self, prompt: Prompt) -> Continuation:
        return Continuation(prompt, self.tokenizer)

    def step(self, sequences: Sequence[Continuation]) -> list[str]:
        """Advance each unfinished sequence by one token; the text each one added."""
        import torch

        with torch.inference_mode():
            last = self._cached(sequences) if self.takes_past else self._windows(sequences)
            tokens = pick(sequences, last.float().cpu())
        return [s.advance(t) for s, t in zip(sequences, tokens, strict=True)]

    def _padded(self, windows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Right-padded ids [B, T] and their mask, on the device, and each window's length."""
        import torch

        lengths = [len(w) for w in windows]
        longest = max(lengths)
        ids = torch.tensor([w + [0] * (longest - len(w)) for w in windows], dtype=torch.long)
        mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
        return ids.to(self.device), mask.to(self.device), lengths

    def _windows(self, sequences: Sequence[Continuation]) -> torch.Tensor:
        """No cache: each sequence's whole window, every step; the last real logits [B, V]."""
        import torch

        ids, mask, lengths = self._padded([s.window(self.context) for s in sequences])
        logits = self.network(ids, mask=mask) if self.takes_mask else self.network(ids)
        rows = torch.arange(len(lengths), device=self.device)
        return logits[rows, torch.tensor(lengths, device=self.device) - 1]

    def _cached(self, sequences: Sequence[Continuation]) -> torch.Tensor:
        """With a KV cache: a prefill for sequences without one (new, or whose cache
        reached the context), one new token for the others; the last logits [B, V]."""
        import torch

        full = [s.cache is None or (self.context and s.cached >= self.context) for s in sequences]
        rows: list[Any] = [None] * len(sequences)
        for wanted, run in ((True, self._prefill), (False, self._extend)):
            picked = [i for i, f in enumerate(full) if f == wanted]
            if picked:
                for i, row in zip(picked, run([sequences[i] for i in picked]), strict=True):
                    rows[i] = row
        return torch.stack(rows)

    def _prefill(self, sequences: list[Continuation]) -> torch.Tensor:
        """Read each window once (the last 3/4 of the context: room is left to extend)."""
        import torch

        keep = max(1, self.context * 3 // 4) if self.context else 0
        ids, mask, lengths = self._padded([s.window(keep) for s in sequences])
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        logits, present = self.network(ids, mask=mask, positions=positions, past=None)
        room = self.context or 2 * max(lengths) + 64
        layers = torch.stack([torch.stack((k, v)) for k, v in present])  # [L, 2, B, H, T, D]
        shape = (layers.shape[0], 2, layers.shape[3], room, layers.shape[5])
        for i, (sequence, length) in enumerate(zip(sequences, lengths, strict=True)):
            sequence.cache = layers.new_zeros(shape)
            sequence.cache[:, :, :, :length] = layers[:, :, i, :, :length]
            sequence.cached = length
        rows = torch.arange(len(lengths), device=self.device)
        return logits[rows, torch.tensor(lengths, device=self.device) - 1]

    def _extend(self, sequences: list[Continuation]) -> torch.Tensor:
        """Each sequence's newest token against its cache: one position per sequence."""
        import torch

        held = max(s.cached for s in sequences)
        cached = torch.tensor([s.cached for s in sequences], device=self.device)
        ids = torch.tensor([[s.last] for s in sequences], dtype=torch.long, device=self.device)
        mask = torch.arange(held + 1, device=self.device)[None, :] < cached[:, None]
        mask[:, held] = True  # the new token itself
        caches = [s.cache for s in sequences]
        assert all(c is not None for c in caches)
        batch = torch.stack(caches, dim=2)[:, :, :, :, :held]  # type: ignore[arg-type]
        past = [(batch[layer, 0], batch[layer, 1]) for layer in range(batch.shape[0])]
        logits, present = self.network(ids, mask=mask, positions=cached[:, None], past=past)
        new = torch.stack([torch.stack((k[:, :, held], v[:, :, held])) for k, v in present])
        for i, sequence in enumerate(sequences):
            assert sequence.cache is not None
            if sequence.cached >= sequence.cache.shape[3]:  # no context limit: double the room
                sequence.cache = torch.cat([sequence.cache, torch.zeros_like(sequence.cache)], 3)
            sequence.cache[:, :, :, sequence.cached] = new[:, :, i]
            sequence.cached += 1
        return logits[:, 0]

    def generate(self, prompts: Sequence[Prompt]) -> list[Continuation]:
        """Every prompt to its end, sharing each step: the whole-text answer (/predict)."""
        sequences = [self.start(p) for p in prompts]
        running = list(sequences)
        while running:
            self.step(running)
            running = [s for s in running if s.finish_reason is None]
        return sequences

    def stream(self, prompt: Prompt) -> Iterator[tuple[str, Continuation]]:
        """One prompt's text as it comes: (chunk, the sequence so far) per step."""
        sequence = self.start(prompt)
        while sequence.finish_reason is None:
            chunk = self.step([sequence])[0]
            yield chunk, sequence


def pick(sequences: Sequence[Continuation], logits: torch.Tensor) -> list[int]:
    """Each sequence's next token from the batch's last logits [B, V] (float32, CPU), with
    its own settings: greedy rows by one argmax; sampled rows scaled by their temperature,
    cut to their top k, then one softmax and one inverse-CDF lookup of each row's own
    seeded draw (a few tensor operations per step, not per sequence)."""
    import torch

    tokens: list[int] = logits.argmax(-1).tolist()
    sampled = [i for i, s in enumerate(sequences) if s.prompt.temperature > 0]
    if not sampled:
        return tokens
    chosen = [sequences[i].prompt for i in sampled]
    rows = logits[sampled] / torch.tensor([[p.temperature] for p in chosen])
    vocab = rows.shape[1]
    ks = [p.top_k if 0 < p.top_k < vocab else 0 for p in chosen]
    if any(ks):
        top = torch.topk(rows, max(ks), dim=-1).values
        kth = top.gather(1, torch.tensor([[max(k, 1) - 1] for k in ks])).squeeze(1)
        floor = torch.where(torch.tensor(ks) > 0, kth, torch.tensor(float("-inf")))
        rows = rows.masked_fill(rows < floor[:, None], float("-inf"))
    cdf = torch.softmax(rows, -1).cumsum(-1)
    draws = torch.tensor([[sequences[i].draw()] for i in sampled]) * cdf[:, -1:]
    found = torch.searchsorted(cdf, draws, right=True).clamp(max=vocab - 1).squeeze(1)
    for i, token in zip(sampled, found.tolist(), strict=True):
        tokens[i] = token
    return tokens
