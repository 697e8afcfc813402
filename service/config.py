"""The service's configuration, read once per process from the environment.

BentoML reads `@bentoml.service(...)`'s options (workers, resources, timeouts) when it
imports the service module, so the settings are read at import, here, and nowhere else.
`proto2prod build` records the reference and the definition as the Bento's arguments,
which BentoML restores wherever it loads the Bento, so `bentoml serve TAG` needs no
environment; the environment still wins.
"""

from __future__ import annotations

import os

import bentoml

from proto2prod.registry import ModelRef
from proto2prod.settings import ServiceSettings, Settings


def environment() -> dict[str, str]:
    """The process environment over the defaults a Bento carries."""
    args = vars(bentoml.use_arguments())
    defaults = {
        "PROTO2PROD_MODEL": args.get("model"),
        "PROTO2PROD_DEFINITION": args.get("definition"),
    }
    return {**{k: str(v) for k, v in defaults.items() if v}, **os.environ}


ENVIRON = environment()
SETTINGS = Settings.from_env(ENVIRON)
CONFIG = ServiceSettings.from_env(ENVIRON)
MODEL_NAME = ModelRef.parse(CONFIG.model).name
