"""How MLflow says that something failed: its exception class, "unreachable", "does not
exist" and SQLite's "database is locked", told apart by type and code, never by message."""

from __future__ import annotations


def mlflow_error() -> type[Exception]:
    """MLflow's exception class, imported when an `except` clause needs it."""
    from mlflow.exceptions import MlflowException

    return MlflowException


NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def unreachable(exc: BaseException) -> bool:
    """MLflow failed to reach the tracking server (refused, timed out, retries spent).

    MLflow's REST client raises its own exception over the `requests` one (as cause or
    context), so the chain is walked for that rather than the message matched.
    """
    import requests

    gone = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, gone):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def sqlite_busy(exc: BaseException | None) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY/LOCKED), by its error code, also wrapped."""
    import sqlite3

    while exc is not None:
        if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
