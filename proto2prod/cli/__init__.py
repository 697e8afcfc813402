"""The `proto2prod` command line. Heavy libraries are imported inside commands only."""

from proto2prod.cli.app import app, main

__all__ = ["app", "main"]
