"""What one replica learns, every replica acts on: `PROTO2PROD_PEERS`.

MLflow sends a webhook delivery to one URL (one POST); behind a load balancer that reaches
one replica, which swaps at once while the others wait for their poll and the fleet serves
two versions meanwhile. So a replica that receives a registry event, or rolls its canary
back, tells its peers: one signed POST to each one's `/admin/peer-events` (the webhook's
own scheme and secret, `PROTO2PROD_WEBHOOK_SECRET`, so the same freshness and replay rules
hold), and each peer runs its own registry check. The event says *look now*, never *serve
version N*: what every replica serves is what the registry says.

`PROTO2PROD_PEERS` is comma-separated base URLs, or one URL whose host is a DNS name with
one address per replica (a Kubernetes headless Service): resolved at each fan-out, so
replicas that come and go are found. A replica finds itself among them too (it cannot know
its own address behind a name): every event carries the sender's `origin`, and a replica
drops its own. Nobody re-tells what a peer told it, so an event never loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from proto2prod.errors import InvalidRequest
from proto2prod.service import webhooks

log = logging.getLogger("proto2prod.service")

PATH = "/admin/peer-events"
TIMEOUT_S = 2.0
"""How long a peer has to take an event; past it the fan-out logs it and goes on (that
peer's poll still catches up)."""
KINDS = ("check", "canary-rollback")


def origin_of(secret: bytes) -> str:
    """A replica's name in its events: from the secret its workers share (service/fanout.py),
    so every worker of one replica has it and no other replica does."""
    return hashlib.sha256(b"proto2prod-origin" + secret).hexdigest()[:16]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(urls: list[str]) -> list[str]:
    """The peers' URLs now: one URL whose host is a name becomes one URL per address (IPv4
    when it has any, so `localhost` is one peer, not two)."""
    if len(urls) != 1:
        return urls
    parts = urlsplit(urls[0])
    host = parts.hostname or ""
    if _is_address(host):
        return urls
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("peers: cannot resolve %s (%s); telling nobody this time", host, exc)
        return []
    v4 = sorted({str(a[4][0]) for a in found if a[0] == socket.AF_INET})
    v6 = sorted({f"[{a[4][0]}]" for a in found if a[0] == socket.AF_INET6})
    return [urlunsplit(parts._replace(netloc=f"{ip}:{port}")) for ip in (v4 or v6)]


class Peers:
    """The other replicas of this service: tell them, and take what they tell."""

    def __init__(self, urls: list[str], secret: str, origin: str) -> None:
        self.urls = urls
        self.secret = secret
        self.origin = origin
        self.seen = webhooks.SeenDeliveries()
        self.last: dict[str, Any] | None = None
        """The latest fan-out: when, what, and each peer's answer (shown in /metadata)."""

    def signed(self, kind: str, data: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """One event's body and its signature headers."""
        body = json.dumps({"kind": kind, "origin": self.origin, **data}).encode()
        delivery, stamp = uuid.uuid4().hex, str(int(time.time()))
        return body, {
            webhooks.ID_HEADER: delivery,
            webhooks.TIMESTAMP_HEADER: stamp,
            webhooks.SIGNATURE_HEADER: webhooks.sign(self.secret, delivery, stamp, body),
            "content-type": "application/json",
        }

    async def tell(self, kind: str, **data: Any) -> dict[str, str]:
        """Send one event to every peer at once; each one's status, or why not. Never raises."""
        import httpx

        body, headers = self.signed(kind, data)
        targets = await asyncio.to_thread(resolve, self.urls)

        async def one(client: httpx.AsyncClient, url: str) -> str:
            try:
                answer = await client.post(url + PATH, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            return str(answer.status_code)

        async with httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False) as client:
            answers = await asyncio.gather(*(one(client, url) for url in targets))
        told = dict(zip(targets, answers, strict=True))
        failed = {url: why for url, why in told.items() if not why.startswith("2")}
        if failed:
            log.warning("peers: %s not taken by %s", kind, failed)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.last = {"at": stamp, "kind": kind, **data, "peers": told}
        return told

    def receive(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        """A peer's verified event (None: our own, or one seen before); Unauthorized when
        not signed with the shared secret or stale; 400 when malformed."""
        delivery = webhooks.verify(headers, body, self.secret)
        try:
            event: Any = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidRequest("the peer event is not JSON", field="body", index=None) from None
        if not isinstance(event, dict) or event.get("kind") not in KINDS:
            raise InvalidRequest(
                f"a peer event is a JSON object whose kind is one of {list(KINDS)}",
                field="kind",
                index=None,
            )
        if event.get("origin") == self.origin or not self.seen.first_time(delivery):
            return None
        return event

    def metadata(self) -> dict[str, Any]:
        return {"configured": self.urls, "origin": self.origin, "last_fanout": self.last}
