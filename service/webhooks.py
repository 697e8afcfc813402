"""MLflow's model-registry webhooks, received: a promotion reaches the service at once.

MLflow (>= 3.3, a tracking server with a SQL store) signs each delivery Standard-Webhooks
style: `X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`
with `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp`. A delivery is trusted only when the
signature matches (compared in constant time), its timestamp is within `TOLERANCE_S` of
ours (an old delivery captured on the wire cannot be replayed later) and its id is new (nor
can it be replayed within the window). Deliveries are best-effort, so the poll stays.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proto2prod.errors import InvalidRequest, Unauthorized

TOLERANCE_S = 300
"""A delivery whose timestamp is further from our clock than this is refused (5 minutes,
Standard Webhooks' default)."""
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
"""The events a service follows: an alias set or moved, an alias removed."""

ID_HEADER = "x-mlflow-delivery-id"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
SIGNATURE_HEADER = "x-mlflow-signature"
HEADERS = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
UNSIGNED = (
    "not a signed MLflow webhook delivery: X-MLflow-Delivery-Id, X-MLflow-Timestamp and "
    "X-MLflow-Signature are required (create the webhook with the secret in "
    "PROTO2PROD_WEBHOOK_SECRET: proto2prod webhook create)"
)


@dataclass(frozen=True)
class AliasEvent:
    """One verified registry event about an alias."""

    delivery_id: str
    event: str
    """`model_version_alias.created` (set or moved) or `model_version_alias.deleted`."""
    name: str
    alias: str
    version: str | None


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    headers: Mapping[str, str], body: bytes, secret: str, *, now: float | None = None
) -> str:
    """The delivery id of a delivery signed with `secret`; Unauthorized otherwise."""
    delivery_id = headers.get(ID_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not (delivery_id and timestamp and given):
        raise Unauthorized(UNSIGNED)
    expected = sign(secret, delivery_id, timestamp, body)
    # Standard Webhooks allows several space-separated signatures (during secret rotation).
    if not any(hmac.compare_digest(s.encode(), expected.encode()) for s in given.split()):
        raise Unauthorized("the webhook signature does not match PROTO2PROD_WEBHOOK_SECRET")
    try:
        sent = int(timestamp)
    except ValueError:
        raise Unauthorized(f"X-MLflow-Timestamp {timestamp!r} is not a Unix time") from None
    skew = abs((time.time() if now is None else now) - sent)
    if skew > TOLERANCE_S:
        raise Unauthorized(
            f"the delivery is {skew:.0f} s away from this server's clock (at most "
            f"{TOLERANCE_S} s): a replay, or a clock to fix"
        )
    return delivery_id


def parse(delivery_id: str, body: bytes) -> AliasEvent | None:
    """The alias event in a verified body; None for another event; 400 when malformed."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("the webhook body is not JSON", field="body", index=None) from None
    if not isinstance(document, dict):
        raise InvalidRequest("the webhook body must be a JSON object", field="body", index=None)
    event = f"{document.get('entity')}.{document.get('action')}"
    if event not in ALIAS_EVENTS:
        return None
    data = document.get("data")
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), str) and data.get(key) for key in ("name", "alias")
    ):
        raise InvalidRequest(
            f"the {event} event needs data.name and data.alias (strings)",
            field="data",
            index=None,
        )
    version = data.get("version")
    return AliasEvent(delivery_id, event, data["name"], data["alias"], str(version or "") or None)


class SeenDeliveries:
    """The latest delivery ids, so a replay within the time window does nothing.

    Bounded: ids older than the window are refused by their timestamp anyway, so only as
    many as can arrive within it need remembering; past `capacity`, the oldest go.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def first_time(self, delivery_id: str) -> bool:
        """True the first time `delivery_id` is seen; it is remembered from then on."""
        if delivery_id in self._ids:
            return False
        self._ids[delivery_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True
