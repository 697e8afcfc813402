"""The MLflow model registry: publish versions, move aliases, resolve and fetch (verified).

Imports only the contract (`proto2prod`); MLflow is imported on first use.
"""

from proto2prod.registry.cache import LocalVersion, cached, fetch, remember_alias, verify
from proto2prod.registry.client import Registry, VersionInfo
from proto2prod.registry.publish import Published, publish
from proto2prod.registry.reference import ModelRef, check_alias

__all__ = [
    "LocalVersion",
    "ModelRef",
    "Published",
    "Registry",
    "VersionInfo",
    "cached",
    "check_alias",
    "fetch",
    "publish",
    "remember_alias",
    "verify",
]
