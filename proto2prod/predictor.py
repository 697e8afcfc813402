"""`Predictor`: THE inference path.

The in-process prototype, the BentoML service and the MLflow pyfunc all call
`Predictor.predict_batch`, so one input gives one output everywhere. Validation and
preprocessing are per item (`prepare`), so a server can reject one bad request without
failing the others it would have batched with it; the forward pass is one call per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from proto2prod.batching import MASK, accepted_keywords, as_batch, one_output, rows
from proto2prod.errors import IncompatibleVersion, InvalidInput
from proto2prod.fields import Record
from proto2prod.generation import Continuation, Decoder
from proto2prod.model import Model
from proto2prod.weights import load_safetensors


def pick_device(requested: str | None = None, *, worker: int = 1) -> torch.device:
    """`requested` if it names one device (`cpu`, `cuda:1`); else CUDA when available, with
    worker `worker` (1-based, as BentoML numbers them) on GPU `(worker - 1) % count`, so N
    workers on N GPUs get one each; else the CPU."""
    if requested and requested != "cuda":
        return torch.device(requested)
    if not torch.cuda.is_available():
        return torch.device(requested or "cpu")
    return torch.device(f"cuda:{(worker - 1) % torch.cuda.device_count()}")


class Predictor:
    """A model definition plus weights, on a device, ready for batched inference.

    `weights` is a state dict or the path of a safetensors file. `half=True` runs the
    network in float16 on CUDA (ignored on CPU, where it is slower); integer inputs (token
    ids) stay integers either way.
    """

    def __init__(
        self,
        model: Model,
        weights: Mapping[str, torch.Tensor] | str | Path,
        device: str | torch.device | None = None,
        *,
        half: bool = False,
    ) -> None:
        self.model = model
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        state = load_safetensors(weights) if isinstance(weights, str | Path) else dict(weights)
        network = model.network()
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise IncompatibleVersion(
                f"the weights do not fit {type(model).__name__}.network(): "
                f"{' '.join(line.strip() for line in first[:3])}"
            ) from None
        self.network = network.to(self.device, self.dtype).eval()
        self._keywords = accepted_keywords(self.network)
        outputs = model.outputs
        self._output_names = outputs.keys() if isinstance(outputs, Record) else None
        self._whole_batch = self._output_names is None and _own_postprocess(model)
        self.decoder: Decoder | None = None
        """A generative model's decoding steps (proto2prod/generation.py); None otherwise."""
        if model.generates:
            self.decoder = Decoder(
                self.network,
                model.tokens,
                context=model.context,
                device=self.device,
                takes_mask=self._keywords is None or MASK in self._keywords,
                takes_past=self._keywords is not None and "past" in self._keywords,
            )

    def prepare(self, item: Any, index: int | None = None) -> Any:
        """Validate and preprocess one JSON item; raises InvalidInput naming the field."""
        decoded = self.model.inputs.decode(item, index=index)
        try:
            return self.model.preprocess(decoded)
        except InvalidInput as exc:  # preprocess refusing a value (an unknown word): say where
            raise InvalidInput(
                exc.field, exc.problem, exc.expected, index=index, key=exc.key
            ) from None

    def prepare_each(
        self, items: Sequence[Any], *, stop: Callable[[], bool] | None = None
    ) -> list[Any | InvalidInput]:
        """Each item prepared, or the InvalidInput (naming its index) that it raised: one bad
        item never hides the others. `stop()` turning true ends the work between items
        (what is left is not returned): the service's deadline."""
        prepared: list[Any | InvalidInput] = []
        for i, item in enumerate(items):
            if stop is not None and stop():
                break
            try:
                prepared.append(self.prepare(item, i))
            except InvalidInput as exc:
                prepared.append(exc)
        return prepared

    def run(self, tensors: Sequence[Any]) -> list[Any]:
        """One forward pass over prepared items (collated by the model), then postprocess
        each row. A generative model's prompts are generated to their end, together."""
        if self.decoder is not None:
            return [s.text for s in self.decoder.generate(tensors)]
        batch = as_batch(self.model.collate(list(tensors))).to(self.device, self.dtype)
        with torch.inference_mode():
            out = batch.call(self.network, self._keywords)
        if self._whole_batch:  # the output field encodes the batch at once
            return self.model.outputs.encode_rows(one_output(out, len(tensors)))
        return [self.model.postprocess(row) for row in rows(out, self._output_names, len(tensors))]

    def predict_each(self, items: Sequence[Any]) -> list[Any | InvalidInput]:
        """Per item, its output or its InvalidInput; one forward pass over the valid ones.

        The one "validate each, run once" path: `predict_batch`, the prototype's in-process
        backend and the benchmark's limit build on it; the service uses `prepare_each` and
        `run` with its batcher in between.
        """
        prepared = self.prepare_each(items)
        tensors = [p for p in prepared if not isinstance(p, InvalidInput)]
        outputs = iter(self.run(tensors) if tensors else [])
        return [p if isinstance(p, InvalidInput) else next(outputs) for p in prepared]

    def predict_batch(self, items: Sequence[Any]) -> list[Any]:
        """Outputs for `items` (JSON-encoded inputs), in order; the first invalid item
        raises its InvalidInput."""
        if not isinstance(items, Sequence) or isinstance(items, str | bytes):
            raise InvalidInput(
                self.model.inputs.name, "got something other than a list of items", "a list"
            )
        if len(items) == 0:
            raise InvalidInput(self.model.inputs.name, "the list is empty", "at least one item")
        prepared = self.prepare_each(items)
        tensors = [p for p in prepared if not isinstance(p, InvalidInput)]
        if len(tensors) < len(prepared):
            raise next(p for p in prepared if isinstance(p, InvalidInput))
        return self.run(tensors)

    def predict(self, item: Any) -> Any:
        """Output for one item."""
        return self.predict_batch([item])[0]

    def stream(self, item: Any) -> Iterator[tuple[str, Continuation]]:
        """A generative model's text for one item as it comes: (chunk, the sequence so far)."""
        if self.decoder is None:
            raise InvalidInput(
                self.model.outputs.name, "this model does not generate", "a generative model"
            )
        return self.decoder.stream(self.prepare(item))

    def warm_up(self) -> None:
        """Run the definition's examples once (first calls allocate, JIT and tune)."""
        self.predict_batch(self.model.examples())


def _own_postprocess(model: Model) -> bool:
    """The model keeps `Model.postprocess` (each row to its field's JSON), so a batch can go
    to the field's `encode_rows` whole; a definition's own postprocess runs per row."""
    return type(model).postprocess is Model.postprocess
