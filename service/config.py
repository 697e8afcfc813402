"""The environment the service reads its settings from (service/parts.py).

`proto2prod build` records the reference and the definition as the Bento's arguments,
which BentoML restores wherever it loads the Bento, so `bentoml serve TAG` needs no
environment; the environment still wins.
"""

from __future__ import annotations

import os

import bentoml


def environment() -> dict[str, str]:
    """The process environment over the defaults a Bento carries."""
    args = vars(bentoml.use_arguments())
    defaults = {
        "PROTO2PROD_MODEL": args.get("model"),
        "PROTO2PROD_DEFINITION": args.get("definition"),
    }
    return {**{k: str(v) for k, v in defaults.items() if v}, **os.environ}
