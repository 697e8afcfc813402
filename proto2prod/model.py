"""The model contract: the one file a user writes.

    class Digits(proto2prod.Model):
        \"\"\"Handwritten digits, 8x8 greyscale.\"\"\"   # the UIs' description
        name = "digits"
        inputs = fields.Image(height=8, width=8, channels=1)
        outputs = fields.Label(classes=[str(d) for d in range(10)], top_k=3)

        def network(self) -> nn.Module: ...            # architecture only, no weights
        def preprocess(self, image) -> Tensor: ...     # one decoded item -> one tensor
        def postprocess(self, row) -> Any: ...         # optional: one output row -> JSON
        def examples(self) -> list: ...                # JSON items, for UIs, docs, warm-up
        def train(self, progress, quick=False) -> Trained: ...

Named inputs and outputs are dicts of fields: `inputs = {"image": fields.Image(...),
"question": fields.Text()}`; `preprocess` then gets a dict of decoded values and may
return a dict of tensors, passed to `forward` by keyword, and `forward` may return a dict
keyed by the output names (or a tuple in their order).

A generative model's output is `fields.Text(stream=True)`: it adds `tokenizer()` and
`context`, its network gives next-token logits, and proto2prod decodes
(proto2prod/generation.py; `generation.inputs()` gives the prompt and its settings).

Batching, devices, `inference_mode`, weights and serving are the framework's job
(`Predictor`), so the same definition runs in a notebook, a UI, the service and MLflow.
The file imports no UI or serving library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from proto2prod.fields import as_field

if TYPE_CHECKING:
    import torch
    from torch import nn

    from proto2prod.generation import Tokenizer


class Progress(Protocol):
    """What `Model.train` reports to: the CLI draws a bar, tests pass `NullProgress`."""

    def start(self, total: int, description: str = "training") -> None: ...

    def advance(self, steps: int = 1, **metrics: float) -> None: ...


class NullProgress:
    """A `Progress` that shows nothing."""

    def start(self, total: int, description: str = "training") -> None:
        pass

    def advance(self, steps: int = 1, **metrics: float) -> None:
        pass


@dataclass
class Trained:
    """What `Model.train` returns: weights for `network()`, held-out metrics, parameters."""

    weights: Mapping[str, torch.Tensor]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    reference_inputs: Sequence[Any] | None = None
    """Held-out inputs (JSON items, as `/predict` takes them): the version's reference
    statistics are computed from them (else from `examples()`), and the service's drift
    check compares live traffic with those."""


class Model:
    """Base class of a proto2prod model definition.

    Subclasses set `name`, `inputs`, `outputs` and implement `network` and `examples`;
    `train` is optional (weights can come from elsewhere); `preprocess` and `postprocess`
    have defaults that fit numeric inputs and Label/Number outputs.
    `proto2prod.load_definition` checks every rule when the file loads.
    """

    name: ClassVar[str]
    # Typed Any so that a user's `inputs = {"image": fields.Image(...), ...}` type-checks;
    # once the class is defined, each is always one Field (a dict became a fields.Record).
    inputs: ClassVar[Any]
    """One field, or a dict of them (named inputs); a dict becomes a `fields.Record`."""
    outputs: ClassVar[Any]
    context: ClassVar[int] = 0
    """A generative model's longest sequence, in tokens (its network's positions); older
    tokens slide out of the window. 0: no limit."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("inputs", "outputs"):
            if isinstance(cls.__dict__.get(attr), Mapping):
                setattr(cls, attr, as_field(cls.__dict__[attr], attr))

    def network(self) -> nn.Module:
        """Build the network with fresh (untrained) parameters."""
        raise NotImplementedError

    def preprocess(self, item: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map one decoded input (what `inputs.decode` returns; for named inputs, a dict of
        them) to the network's input: a tensor, or a dict of tensors passed by keyword.

        The default converts numeric arrays as they are (a dict entry by entry); override
        it to normalise, resize or tokenize. Integer tensors stay integers. A generative
        model's gives a `generation.Prompt`: by default the `prompt` tokenized and the
        settings of `generation.inputs()`.
        """
        import torch

        if self.generates:
            from proto2prod.generation import prompt_of

            return prompt_of(self.tokens, item)  # type: ignore[return-value]

        if isinstance(item, Mapping):
            return {key: torch.as_tensor(value) for key, value in item.items()}
        return torch.as_tensor(item)

    def collate(self, items: Sequence[Any]) -> Any:
        """Batch the preprocessed items. The default stacks same-shaped tensors and pads
        1-d ones of different lengths (token ids) with 0, offering the network a mask
        (`forward(ids, mask=...)`, or `<key>_mask` for named inputs: proto2prod.batching).
        Override it for another padding; return a tensor, a dict or a `batching.Batch`."""
        from proto2prod.batching import collate

        return collate(items)

    def postprocess(self, row: Any) -> Any:
        """Map one row of the network's output (a tensor; for named outputs, a dict of
        tensors) to the JSON value of `outputs`."""
        return self.outputs.encode(row)

    def examples(self) -> list[Any]:
        """A few inputs in their JSON encoding: clickable in UIs, used to warm up and check."""
        raise NotImplementedError

    def train(self, progress: Progress, quick: bool = False) -> Trained:
        """Optional. Train from data a package ships or the code makes; `quick` is a short run
        for tests. Without it, register weights trained elsewhere with `proto2prod register`."""
        raise NotImplementedError

    def tokenizer(self) -> Tokenizer:
        """A generative model's tokenizer (`generation.ByteTokenizer()` reads any text)."""
        raise NotImplementedError

    @property
    def tokens(self) -> Tokenizer:
        """`tokenizer()`, made once per definition object."""
        made = self.__dict__.get("_tokenizer")
        if made is None:
            made = self.__dict__["_tokenizer"] = self.tokenizer()
        return made

    @property
    def generates(self) -> bool:
        """Whether the output is generated token by token (`fields.Text(stream=True)`)."""
        return bool(getattr(self.outputs, "stream", False))

    @property
    def has_train(self) -> bool:
        """Whether the definition trains itself; without `train()` its weights come from
        elsewhere (`proto2prod register FILE.py --weights PATH`)."""
        return type(self).train is not Model.train

    @property
    def title(self) -> str:
        return self.name.replace("_", " ").replace("-", " ").title()

    @property
    def description(self) -> str:
        return (type(self).__doc__ or "").strip()

    def spec(self) -> dict[str, Any]:
        """The fields, as recorded with every registered version and compared on swaps."""
        return {"inputs": self.inputs.spec(), "outputs": self.outputs.spec()}
