"""From prepared items to one forward pass and back: collate, the call, the rows.

`preprocess` gives each item as a tensor or a dict of tensors; `Model.collate` (by default
`collate` here) makes the batch. Same-shaped tensors are stacked; 1-d tensors of different
lengths (token ids) are padded at the end with `pad_value` to the longest, and a boolean
mask, True at real positions, is offered to the network: as the keyword `mask` (one input)
or `<key>_mask` (named inputs), passed only if `forward` takes that keyword. So a network
asks for the mask by naming it, and one that does not is called as it was.

Dtypes are kept: integer ids stay int64 for an `nn.Embedding`; only floating tensors move
to the model's float dtype (float16 with `half`). The network gives a tensor (one output),
a dict keyed by the output names, or a tuple in the outputs' order; `rows` splits any of
them into one row per item for `postprocess`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError

if TYPE_CHECKING:
    import torch
    from torch import nn

MASK = "mask"


@dataclass
class Batch:
    """What the network is called with: positional tensors, keyword tensors, and the masks
    it may ask for (only those its `forward` takes are passed)."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device, dtype: torch.dtype) -> Batch:
        """On `device`; floating tensors in `dtype`, integer and boolean ones as they are."""
        return Batch(
            tuple(_moved(t, device, dtype) for t in self.args),
            {k: _moved(t, device, dtype) for k, t in self.kwargs.items()},
            {k: t.to(device, non_blocking=True) for k, t in self.masks.items()},
        )

    def call(self, network: nn.Module, taken: set[str] | None) -> Any:
        """`network(*args, **kwargs, **masks)`, with the masks `taken` (accepted_keywords)."""
        masks = {k: m for k, m in self.masks.items() if taken is None or k in taken}
        return network(*self.args, **self.kwargs, **masks)


def _moved(tensor: Any, device: Any, dtype: Any) -> Any:
    if tensor.is_floating_point():
        return tensor.to(device, dtype, non_blocking=True)
    return tensor.to(device, non_blocking=True)


def accepted_keywords(network: nn.Module) -> set[str] | None:
    """The keywords `network.forward` takes; None when it takes **kwargs (any)."""
    try:
        parameters = inspect.signature(network.forward).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def collate(items: Sequence[Any], pad_value: int | float = 0) -> Batch:
    """The default `Model.collate`: stack, or pad ragged 1-d tensors and offer a mask."""
    first = items[0]
    if isinstance(first, Mapping):
        kwargs, masks = {}, {}
        for key in first:
            kwargs[key], mask = stack([item[key] for item in items], pad_value, what=key)
            if mask is not None:
                masks[f"{key}_{MASK}"] = mask
        return Batch(kwargs=kwargs, masks=masks)
    tensor, mask = stack(list(items), pad_value, what="preprocess()")
    return Batch(args=(tensor,), masks={MASK: mask} if mask is not None else {})


def stack(
    tensors: Sequence[torch.Tensor], pad_value: int | float = 0, *, what: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stacked; or, for 1-d tensors of different lengths, padded at the end. 1-d tensors
    (token ids, features) come with their mask, all True when no item was padded, so a
    network that asks for it gets it whatever the batch."""
    import torch

    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        stacked = torch.stack(list(tensors))
        mask = torch.ones(stacked.shape, dtype=torch.bool) if stacked.ndim == 2 else None
        return stacked, mask
    if any(t.ndim != 1 for t in tensors):
        raise DefinitionError(
            f"{what} gives tensors of different shapes {sorted(shapes)[:3]}: only 1-d ones "
            f"(token ids) are padded; give one shape, or write a collate()"
        )
    longest = max(len(t) for t in tensors)
    padded = torch.full((len(tensors), longest), pad_value, dtype=tensors[0].dtype)
    mask = torch.zeros((len(tensors), longest), dtype=torch.bool)
    for i, t in enumerate(tensors):
        padded[i, : len(t)] = t
        mask[i, : len(t)] = True
    return padded, mask


def as_batch(value: Any) -> Batch:
    """What a user's `collate` returned (a Batch, a tensor or a dict of tensors) as a Batch."""
    if isinstance(value, Batch):
        return value
    if isinstance(value, Mapping):
        return Batch(kwargs=dict(value))
    return Batch(args=(value,))


def rows(out: Any, names: Sequence[str] | None, size: int) -> list[Any]:
    """The network's output, one row per item: a tensor row, or {output name: tensor row}
    for named outputs (`names`). Floating rows come back as float32 on the CPU."""
    import torch

    if names is None or isinstance(out, torch.Tensor):  # named: postprocess builds the dict
        return list(one_output(out, size))
    if isinstance(out, Mapping):
        missing = [n for n in names if n not in out]
        if missing:
            raise DefinitionError(
                f"network() returned a dict without the output(s) {missing}; its keys must be "
                f"the output names {list(names)}"
            )
        parts = {n: _on_cpu(_batched(out[n], size, f"output '{n}'")) for n in names}
    elif isinstance(out, tuple | list) and len(out) == len(names):
        parts = {
            n: _on_cpu(_batched(t, size, f"output '{n}'")) for n, t in zip(names, out, strict=True)
        }
    else:
        raise DefinitionError(
            f"network() must return a dict keyed by the output names {list(names)} or a tuple "
            f"of {len(names)} tensors in that order; it gave {type(out).__name__}"
        )
    return [{n: parts[n][i] for n in names} for i in range(size)]


def one_output(out: Any, size: int) -> torch.Tensor:
    """The network's one output tensor, checked to hold `size` rows, on the CPU."""
    import torch

    if not isinstance(out, torch.Tensor):
        raise DefinitionError(
            f"network() must return one tensor for the one output; it gave {type(out).__name__}"
        )
    return _on_cpu(_batched(out, size, "network()"))


def _batched(tensor: Any, size: int, what: str) -> torch.Tensor:
    import torch

    if not isinstance(tensor, torch.Tensor) or tensor.ndim < 1 or tensor.shape[0] != size:
        raise DefinitionError(
            f"{what} must be a tensor whose first dimension is the batch ({size} items)"
        )
    return tensor


def _on_cpu(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.float() if tensor.is_floating_point() else tensor
