"""What the service's answers mean: a bounded reply, the error a refusal stands for, a
prediction's body checked, and the server-sent events of `/generate` read as `Chunk`s.
`proto2prod.client` does the I/O; this module only reads what came."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proto2prod import errors
from proto2prod.errors import InvalidInput, NotAService, Proto2ProdError

DEFAULT_RETRY_AFTER_S = 1.0
"""The wait when a 429/503 gives no (readable) `Retry-After`."""


@dataclass(frozen=True)
class Prediction:
    """A 200 from `/predict`: one output per item, in order, and who answered."""

    outputs: list[Any]
    version: str
    model: str


@dataclass(frozen=True)
class Reply:
    """A bounded HTTP answer: status, headers (lower-case names) and the body's bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        try:
            found = json.loads(self.body)
        except (ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    def message(self) -> str:
        found = self.object() or {}
        said = found.get("message") or found.get("error")
        return str(said) if isinstance(said, str | int | float) and said else self.describe()

    def describe(self) -> str:
        """What the answer is, in a few words (never its whole body)."""
        if not self.body:
            return "an empty body"
        found = self.object()
        if found is not None:
            return f"a JSON object with {', '.join(sorted(map(str, found))[:5]) or 'no keys'}"
        kind = self.headers.get("content-type", "unknown type").split(";")[0]
        return f"{len(self.body)} bytes of {kind}"

    def retry_after(self) -> float:
        """The wait the service asked for (seconds; an HTTP date is read as the default)."""
        given = self.headers.get("retry-after", "")
        try:
            return max(0.0, float(given))
        except ValueError:
            return DEFAULT_RETRY_AFTER_S


def refusal(reply: Reply) -> Proto2ProdError:
    """The error a non-200 answer stands for: the service's own kind where it names one (a
    proxy's page in front of it is a `Refused` with its status and a few words of what came).
    """
    body = reply.object() or {}
    if reply.status == 422 and body.get("error") == "InvalidInput":
        return _invalid_input(body)
    kind = getattr(errors, str(body.get("error")), None)
    if isinstance(kind, type) and issubclass(kind, errors.Refused) and kind.status == reply.status:
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
        return kind(reply.message(), **details)
    found = errors.Refused(reply.message())
    found.status = reply.status  # a kind this client does not know: its status kept
    return found


def _invalid_input(body: dict[str, Any]) -> InvalidInput:
    index = body.get("index")
    return InvalidInput(
        str(body.get("field") or "input"),
        str(body.get("problem") or body.get("message")),
        str(body.get("expected") or "what the field's schema describes"),
        index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        key=body["key"] if isinstance(body.get("key"), str) else None,
    )


def prediction(reply: Reply, url: str, sent: int) -> Prediction:
    """A 200's body, checked: `outputs` has one entry per item sent."""
    body = reply.object() or {}
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != sent:
        raise NotAService(
            f"{url}/predict answered 200 with {reply.describe()}, not {sent} outputs: is it "
            f"a proto2prod service?"
        )
    version = reply.headers.get("x-model-version") or str(body.get("version", ""))
    return Prediction(outputs, version, str(body.get("model", "")))


@dataclass(frozen=True)
class Chunk:
    """A piece of a generated text from `/generate`; the last one (empty `text`) carries
    `finish_reason` (`stop` or `length`), the token counts and the version."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    version: str = ""
    model: str = ""


class EventReader:
    """Server-sent events, line by line: `feed(line)` gives a `Chunk` when an event ends
    (a blank line), raises the service's error for an `error` event, else None."""

    def __init__(self, url: str, version: str) -> None:
        self.url = url
        self.version = version
        self.kind = "message"
        self.data: list[str] = []
        self.finished = False

    def feed(self, line: str) -> Chunk | None:
        if line.startswith("event:"):
            self.kind = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].strip())
        elif not line and self.data:
            kind, data = self.kind, "\n".join(self.data)
            self.kind, self.data = "message", []
            return self._event(kind, data)
        return None

    def _event(self, kind: str, data: str) -> Chunk | None:
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise NotAService(f"{self.url}/generate sent an event that is not a JSON object")
        if kind == "chunk":
            return Chunk(str(body.get("text", "")), version=self.version)
        if kind == "error":
            status = body.get("status")
            reply = Reply(status if isinstance(status, int) else 500, {}, data.encode())
            raise refusal(reply)
        if kind == "done":
            self.finished = True
            return Chunk(
                "",
                finish_reason=str(body.get("finish_reason")),
                prompt_tokens=int(body.get("prompt_tokens", 0)),
                completion_tokens=int(body.get("completion_tokens", 0)),
                version=str(body.get("version", self.version)),
                model=str(body.get("model", "")),
            )
        return None

    def check_finished(self) -> None:
        """At the end of the stream: `NotAService` if it ended before its `done` event."""
        if not self.finished:
            raise NotAService(f"{self.url}/generate ended before its `done` event")
