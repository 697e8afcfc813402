"""Load a model definition and check it against the contract, failing at load, never later.

A definition is named by a file (`my_model.py`), a file and class (`my_model.py:Iris`) or
an importable entry (`proto2prod.examples.digits:Digits`). Every rule that can be checked
without weights is checked here, with a message naming the rule, so a mistake shows when
the file loads rather than on the first request.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from proto2prod.batching import accepted_keywords, as_batch, rows
from proto2prod.errors import DefinitionError, InvalidInput
from proto2prod.fields import Field, Record, Text
from proto2prod.model import Model

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED = ("network", "examples")  # train() is optional: `register` brings weights


@dataclass(frozen=True)
class Definition:
    """A checked model definition and where it came from."""

    model: Model
    entry: str
    """How to load it again: `module:Class` when importable, else `path/to/file.py:Class`."""
    source: str
    """The text of the file that defines it (logged to the registry with every version)."""


def load_definition(ref: str | Path, *, check: bool = True) -> Definition:
    """Import the model class named by `ref`, instantiate it and check it."""
    text = str(ref)
    target, _, class_name = text.partition(":") if not Path(text).exists() else (text, "", "")
    if target.endswith(".py") or Path(target).exists():
        module = _import_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise DefinitionError(
                f"cannot import '{target}' ({exc}); pass a .py file or an importable module",
                where=text,
            ) from None
    cls = _pick_class(module, class_name, where=text)
    try:
        model = cls()
    except Exception as exc:  # the user's constructor: say where it failed, keep the cause
        raise DefinitionError(f"{cls.__name__}() failed: {exc}", where=text) from exc
    source_file = inspect.getsourcefile(cls)
    source = Path(source_file).read_text() if source_file else ""
    entry = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__.startswith("_proto2prod_file_"):
        entry = f"{Path(source_file or target).as_posix()}:{cls.__qualname__}"
    if check:
        check_definition(model, where=text)
    return Definition(model=model, entry=entry, source=source)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise DefinitionError(f"no such file: {path}; give the path of a model definition .py")
    resolved = path.resolve()
    importable = _importable_name(resolved)
    if importable is not None:
        # Inside an installed package (examples/digits.py -> examples.digits): import it
        # by name, so the recorded entry point works wherever the package is installed.
        return importlib.import_module(importable)
    module_name = "_proto2prod_file_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed to import: name it and keep the cause
        del sys.modules[module_name]
        raise DefinitionError(
            f"importing it failed with {type(exc).__name__}: {exc}", where=str(path)
        ) from exc
    return module


def _importable_name(path: Path) -> str | None:
    """`pkg.mod` if `path` is that module of an importable package, else None."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) == 1:
        return None
    name = ".".join(parts)
    # The repository's top-level folders install as subpackages of proto2prod
    # (examples/digits.py -> proto2prod.examples.digits): prefer the installed name, the
    # one a service or a Bento elsewhere can import.
    for candidate in (f"proto2prod.{name}", name):
        try:
            spec = importlib.util.find_spec(candidate)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin is not None and Path(spec.origin).resolve() == path:
            return candidate
    return None


def _pick_class(module: ModuleType, class_name: str, *, where: str) -> type[Model]:
    if class_name:
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Model)):
            raise DefinitionError(f"'{class_name}' is not a proto2prod.Model subclass", where=where)
        return cls
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Model)
        and obj is not Model
        and obj.__module__ == module.__name__
    ]
    if not found:
        raise DefinitionError(
            "defines no proto2prod.Model subclass; write `class MyModel(proto2prod.Model): ...`",
            where=where,
        )
    if len(found) > 1:
        names = ", ".join(sorted(c.__name__ for c in found))
        raise DefinitionError(
            f"defines several models ({names}); pick one with FILE.py:ClassName", where=where
        )
    return found[0]


def check_definition(model: Model, *, where: str | None = None) -> None:
    """Check every rule of the contract; raise DefinitionError naming the first one broken."""
    where = where or type(model).__name__

    def fail(rule: str) -> DefinitionError:
        return DefinitionError(rule, where=where)

    name = getattr(model, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail(
            f"`name` must be 1-64 letters, digits, '_', '.' or '-' (a registry name); got {name!r}"
        )
    for attr, direction in (("inputs", "can_input"), ("outputs", "can_output")):
        value = getattr(model, attr, None)
        if not isinstance(value, Field):
            raise fail(
                f"`{attr}` must be a proto2prod field such as fields.Image(...); got {value!r}"
            )
        if not getattr(value, direction):
            raise fail(f"`{attr}` = {value!r} cannot be used as {attr[:-1]}")
    for method in _REQUIRED:
        if getattr(type(model), method) is getattr(Model, method):
            raise fail(f"`{method}()` must be implemented")

    examples = _call(model.examples, "examples()", fail)
    if not isinstance(examples, list) or not examples:
        raise fail("`examples()` must return a non-empty list of inputs in their JSON encoding")
    decoded = []
    for i, example in enumerate(examples):
        try:
            json.dumps(example)
            decoded.append(model.inputs.decode(example, index=i))
        except InvalidInput as exc:
            raise fail(f"`examples()[{i}]` does not fit `inputs`: {exc}") from None
        except (TypeError, ValueError):
            raise fail(f"`examples()[{i}]` is not JSON-serialisable") from None
    if model.generates:
        _check_generation(model, decoded, fail)
    else:
        _check_network(model, decoded, fail)


def _check_generation(model: Model, decoded: list[Any], fail: Any) -> None:
    """A generative model: one streamed Text output, a tokenizer, preprocess giving a
    Prompt, and a network whose logits cover the vocabulary; two decoding steps over the
    examples, as the Predictor runs them."""
    import torch

    from proto2prod.generation import Decoder, Prompt

    if not isinstance(model.outputs, Text):
        raise fail("a generative model has one output, `fields.Text(stream=True)`")
    tokenizer = _call(model.tokenizer, "tokenizer()", fail)
    for attr in ("encode", "decode", "eos_id", "vocab_size"):
        if not hasattr(tokenizer, attr):
            raise fail(f"`tokenizer()` must give an object with `{attr}` (generation.Tokenizer)")
    prompts = [_call(lambda i=item: model.preprocess(i), "preprocess()", fail) for item in decoded]
    if not all(isinstance(p, Prompt) for p in prompts):
        raise fail("a generative model's `preprocess()` must return a generation.Prompt")
    network = _call(model.network, "network()", fail).eval()
    keywords = accepted_keywords(network)
    takes_mask = keywords is None or "mask" in keywords
    takes_past = keywords is not None and "past" in keywords
    ids = torch.tensor([list(prompts[0].ids)], dtype=torch.long)
    with torch.inference_mode():
        try:
            if takes_past:  # a KV cache: (logits, present), generation.KV_CACHE
                logits = network(
                    ids, mask=ids >= 0, positions=torch.arange(ids.shape[1])[None], past=None
                )[0]
            else:
                logits = network(ids, mask=ids >= 0) if takes_mask else network(ids)
        except Exception as exc:  # the user's network on token ids [1, T]
            shape = list(ids.shape)
            raise fail(f"`network()` fails on token ids of shape {shape}: {exc}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise fail("a generative `network()` must return next-token logits [B, T, vocab]")
    if logits.shape[-1] < tokenizer.vocab_size:
        raise fail(
            f"`network()` gives {logits.shape[-1]} logits per position; the tokenizer's "
            f"vocabulary has {tokenizer.vocab_size} ids"
        )
    device = torch.device("cpu")
    decoder = Decoder(
        network,
        tokenizer,
        context=model.context,
        device=device,
        takes_mask=takes_mask,
        takes_past=takes_past,
    )
    sequences = [decoder.start(p) for p in prompts]
    for _ in range(2):
        try:
            decoder.step(sequences)
        except Exception as exc:  # padding, masks, positions past the context
            raise fail(f"a decoding step over the examples fails: {exc}") from None


def _call(method: Any, name: str, fail: Any) -> Any:
    """Call a method of the user's definition; if it raises, say which, in one line."""
    try:
        return method()
    except Exception as exc:  # the user's code: name the method and the error, keep going
        raise fail(f"`{name}` raised {type(exc).__name__}: {exc}") from exc


def _check_network(model: Model, decoded: list[Any], fail: Any) -> None:
    """The examples through preprocess, collate, the network and postprocess, as the
    Predictor runs them, with a message naming the rule each step can break."""
    import torch
    from torch import nn

    network = _call(model.network, "network()", fail)
    if not isinstance(network, nn.Module):
        raise fail(f"`network()` must return a torch.nn.Module; got {type(network).__name__}")
    prepared = [_call(lambda i=item: model.preprocess(i), "preprocess()", fail) for item in decoded]
    _check_prepared(prepared, fail)
    try:
        batch = as_batch(model.collate(prepared)).to(torch.device("cpu"), torch.float32)
    except DefinitionError as exc:
        raise fail(exc.rule) from None
    except Exception as exc:  # the user's collate
        raise fail(f"`collate()` raised {type(exc).__name__}: {exc}") from None
    network.eval()
    with torch.inference_mode():
        try:
            out = batch.call(network, accepted_keywords(network))
        except Exception as exc:  # shapes the user's network rejects: say which rule broke
            raise fail(
                f"`network()` fails on a batch of the {len(prepared)} preprocessed examples "
                f"({_shapes(batch)}): {exc}"
            ) from None
    names = model.outputs.keys() if isinstance(model.outputs, Record) else None
    try:
        split = rows(out, names, len(prepared))
    except DefinitionError as exc:
        raise fail(exc.rule) from None
    first, own = split[0], _postprocess_overridden(model)
    if names and not isinstance(first, dict) and not own:
        raise fail(
            f"`network()` must return a dict keyed by the output names {names} (or a tuple in "
            f"their order), or the definition needs a postprocess() that builds the outputs"
        )
    if not own:
        shape = {k: tuple(t.shape) for k, t in first.items()} if names else tuple(first.shape)
        problem = model.outputs.output_shape_problem(shape)
        if problem:
            raise fail(problem)
    for i, row in enumerate(split):
        value = _call(lambda r=row: model.postprocess(r), "postprocess()", fail)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise fail("`postprocess()` must return a JSON-serialisable value") from None
        problem = model.outputs.output_problem(value)
        if problem:
            raise fail(f"`postprocess()` of examples()[{i}] does not fit `outputs`: {problem}")


def _check_prepared(prepared: list[Any], fail: Any) -> None:
    import torch

    def kind(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return "tensor"
        if isinstance(value, dict) and all(isinstance(t, torch.Tensor) for t in value.values()):
            return tuple(value)
        return None

    kinds = {kind(p) for p in prepared}
    if None in kinds or len(kinds) != 1:
        raise fail(
            "`preprocess()` must return a tensor, or a dict of tensors with the same keys, for "
            f"every item; for examples() it gave {sorted({type(p).__name__ for p in prepared})}"
        )


def _shapes(batch: Any) -> str:
    parts: list[Any] = [list(t.shape) for t in batch.args]
    parts += [f"{k}={list(t.shape)}" for k, t in {**batch.kwargs, **batch.masks}.items()]
    return ", ".join(str(p) for p in parts)


def _postprocess_overridden(model: Model) -> bool:
    """A postprocess of the user's own makes the JSON itself (a Text answer from logits,
    boxes from a mask): the network's rows then need not fit the output field's shape."""
    return type(model).postprocess is not Model.postprocess
