"""The MLflow model registry: publish versions, move aliases, resolve and fetch (verified).

Imports only the contract (`proto2prod`); MLflow is imported on first use.
"""

from registry.cache import LocalVersion, cached, fetch, remember_alias, verify
from registry.client import Registry, VersionInfo
from registry.publish import Published, publish
from registry.reference import ModelRef, check_alias

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
