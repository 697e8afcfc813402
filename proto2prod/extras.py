"""Optional dependency groups: import one or say exactly which extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from proto2prod.errors import MissingExtra

EXTRA_OF = {
    "gradio": "ui",
    "streamlit": "ui",
    "bentoml": "serve",
    "mcp": "ui",  # Gradio's MCP server (the service's /mcp has it from the serve extra)
    "locust": "bench",
    "matplotlib": "bench",
    "hdrh": "bench",
}


def require(module: str) -> ModuleType:
    """Import `module`, or raise MissingExtra with the `pip install 'proto2prod[...]'` line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name and exc.name.split(".")[0] != top:
            raise
        raise MissingExtra(module, EXTRA_OF.get(top, "all")) from None


def check_installed(*modules: str) -> None:
    """MissingExtra for the first of `modules` that is not installed, without importing any
    (a command that runs them as subprocesses should not pay for, or be patched by, them:
    importing locust monkey-patches the whole process with gevent)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(module, EXTRA_OF.get(module.split(".")[0], "all"))
