"""The service refuses to listen beyond loopback without API keys, however it is started.

`proto2prod serve --host 0.0.0.0` checked this before; `bentoml serve TAG` (a Bento) and
`bentoml serve proto2prod.service.app:ModelService` did not, and BentoML's default host is
0.0.0.0. So the check lives in the service: in BentoML's arbiter, from the host the
`bentoml serve` command was given (or BentoML's configured default), before any socket is
opened; and again in each worker, from the listening socket it was handed, in case the
host came from somewhere the first check cannot see. Open beyond loopback only with
`PROTO2PROD_NO_AUTH=1` (`proto2prod serve --no-auth`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

from proto2prod.errors import SettingsError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(host: str, keys_file: object) -> SettingsError:
    return SettingsError(
        f"refusing to listen on {host} without API keys ({keys_file} holds none): anyone who "
        f"reaches it could predict. Create a key (proto2prod keys create NAME), bind "
        f"127.0.0.1 (--host 127.0.0.1), or set PROTO2PROD_NO_AUTH=1 to serve it open"
    )


def arbiter_host() -> str | None:
    """The host `bentoml serve` will bind, read in its arbiter; None when this process is not
    BentoML's `serve` (`bentoml build` and `proto2prod build` import the service too)."""
    try:
        import click

        context = click.get_current_context(silent=True)
        if context is None or context.info_name != "serve" or "host" not in context.params:
            return None
        host = context.params.get("host")
        if host:
            return str(host)
        from bentoml._internal.configuration.containers import BentoMLContainer

        return str(BentoMLContainer.http.host.get())  # BentoML's default: 0.0.0.0
    except Exception:  # not under BentoML's CLI: the worker's check still runs
        return None


def worker_hosts(argv: list[str] | None = None) -> list[str]:
    """The addresses of the listening socket a BentoML worker was handed (`--fd N`)."""
    args = sys.argv if argv is None else argv
    hosts = []
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--fd" and value.isdigit():
            try:
                probe = socket.socket(fileno=os.dup(int(value)))
            except OSError:
                continue
            try:
                address = probe.getsockname()
            except OSError:
                continue
            finally:
                probe.close()
            if isinstance(address, tuple):
                hosts.append(str(address[0]))
    return hosts


def check(hosts: list[str], *, keys_enabled: bool, no_auth: bool, keys_file: object) -> None:
    """`SettingsError` when any of `hosts` is beyond loopback and nothing guards it."""
    if keys_enabled or no_auth:
        return
    for host in hosts:
        if not is_loopback(host):
            raise refusal(host, keys_file)
