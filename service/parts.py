"""The service's parts, made in one place from the environment: settings, the registry, the
API keys (fail closed, checked before anything listens), the definition, and the request
and response schemas `/docs` shows.

BentoML imports the service module twice: in its arbiter, for the service's configuration,
and in each worker, which serves. `assemble()` runs in both; only a worker loads the
definition (torch, the registry client, MLflow), so the arbiter stays a small process
(`proto2prod serve` has checked the definition before starting BentoML, so a bad one is a
one-line error there). What BentoML's decorators read at import is why this runs at import
at all; everything after that is built by `ModelService.__init__` from these parts.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from proto2prod.errors import SettingsError
from proto2prod.registry import ModelRef, Registry
from proto2prod.service import exposure
from proto2prod.service.keys import KeyStore
from proto2prod.settings import ServiceSettings, Settings

if TYPE_CHECKING:
    from proto2prod.definition import Definition

log = logging.getLogger("proto2prod.service")


@dataclass
class Parts:
    """What one process of the service is built from."""

    settings: Settings
    config: ServiceSettings
    registry: Registry
    keys: KeyStore
    in_worker: bool
    definition: Definition | None = None
    """The model definition; None in BentoML's arbiter, which never serves."""

    @property
    def model_name(self) -> str:
        return ModelRef.parse(self.config.model).name

    def schemas(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON schemas of one input item and one output (empty in the arbiter)."""
        if self.definition is None:
            return {}, {}
        model = self.definition.model
        return model.inputs.json_schema(), model.outputs.json_schema()


def assemble(environ: Mapping[str, str], *, in_worker: bool) -> Parts:
    """The parts for this process; a settings problem is one line and exit 2 (`refuse`)."""
    from proto2prod.startup import configure_process

    try:
        settings = Settings.from_env(environ)
        config = ServiceSettings.from_env(environ)
    except SettingsError as error:
        refuse(error, in_worker)
    configure_process(settings, serving=True)  # this process is ours: set it up once
    keys = KeyStore(settings.keys_file, required=settings.keys_required)
    try:  # fail closed: the keys file and where the service listens, before anything serves
        keys.start(watch=in_worker)
        hosts = (
            exposure.worker_hosts() if in_worker else [h for h in [exposure.arbiter_host()] if h]
        )
        exposure.check(
            hosts, keys_enabled=keys.enabled, no_auth=config.no_auth, keys_file=keys.path
        )
    except SettingsError as error:
        refuse(error, in_worker)
    parts = Parts(settings, config, Registry(settings), keys, in_worker)
    if in_worker:
        from proto2prod.service.runtime import find_definition

        parts.definition = find_definition(config, parts.registry, ModelRef.parse(config.model))
    return parts


def refuse(error: SettingsError, in_worker: bool) -> NoReturn:
    """One line and exit 2: in the arbiter before anything listens; in a worker (a host the
    arbiter could not see), the arbiter is stopped too, so the service does not listen."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    if in_worker:
        log.error("%s", error)
        os.kill(os.getppid(), signal.SIGTERM)
    os._exit(2)  # BentoML would print a traceback around a SystemExit raised from here
