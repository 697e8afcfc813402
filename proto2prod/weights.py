"""Weights on disk: safetensors in and out, and state dicts trained elsewhere.

proto2prod stores weights as safetensors only: no pickle is ever loaded from a registry.
A checkpoint from a notebook or a training cluster is often a PyTorch file (`.pt`, `.pth`,
`.bin`); it is read with `torch.load(weights_only=True)`, which refuses anything but plain
tensors and containers, so a file cannot run code while it is read, and converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proto2prod.errors import InvalidWeights

if TYPE_CHECKING:
    import torch

SAFETENSORS = (".safetensors",)
TORCH_FILES = (".pt", ".pth", ".bin")
# Training loops wrap the state dict: Lightning and many scripts save {"state_dict": ...}.
WRAPPERS = ("state_dict", "model_state_dict", "model")
SAVE_HINT = "save it with torch.save(model.state_dict(), PATH) or safetensors' save_file"


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never pickle)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def save_safetensors(weights: Mapping[str, torch.Tensor], path: str | Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    save_file(tensors, str(path))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a PyTorch state-dict file.

    Raises InvalidWeights, saying how to fix it, for anything else: another format, a
    pickled whole module, or a file `weights_only` refuses.
    """
    if not path.is_file():
        raise InvalidWeights(f"--weights {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS:
        try:
            return load_safetensors(path)
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise InvalidWeights(
                f"--weights {path}: not a readable safetensors file ({exc})"
            ) from None
    if suffix not in TORCH_FILES:
        raise InvalidWeights(
            f"--weights {path}: expected a .safetensors file or a PyTorch state dict "
            f"({', '.join(TORCH_FILES)}), not '{suffix or 'no extension'}'"
        )
    return _state_dict(_torch_load(path), path)


def _torch_load(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refused a class: typically torch.save(model) of a whole nn.Module.
        raise InvalidWeights(
            f"--weights {path}: holds more than tensors (a pickled whole model?), which is "
            f"never loaded; {SAVE_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as exc:
        # torch.load reports bytes that are no PyTorch file in many ways (KeyError included)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidWeights(f"--weights {path}: not a readable PyTorch file ({reason})") from None


def _state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    def tensors_only(value: Any) -> bool:
        return (
            isinstance(value, Mapping)
            and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
        )

    if tensors_only(loaded):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in WRAPPERS:
            if tensors_only(loaded.get(key)):
                return dict(loaded[key])
        keys = ", ".join(sorted(map(str, loaded))[:8])
        raise InvalidWeights(
            f"--weights {path}: a dict without a state dict in it (keys: {keys}); "
            f"expected names -> tensors, or one of them under {', '.join(WRAPPERS)}; {SAVE_HINT}"
        )
    raise InvalidWeights(
        f"--weights {path}: holds {type(loaded).__name__}, not a state dict; {SAVE_HINT}"
    )
