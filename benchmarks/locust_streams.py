"""Locust users that stream a generative model's text: tokens per second and time to first token.

Configured by the environment (benchmarks/streams.py sets it): `P2P_KIND` (`json`: the
service's `POST /generate` events; `gradio`: Gradio's queued call and its event stream, as
its page reads it), `P2P_PAYLOAD` (a JSON file: the items, one per stream), `P2P_FIELDS`
(the input names in Gradio's order), `P2P_WARMUP_S`, `P2P_OUT` (where the master writes
what the workers measured).

Each user runs one stream after another (closed loop: N users = N concurrent streams).
Tokens are counted as they arrive within the measured window (a service's chunk event is
one token; Gradio's growing text is counted by the bytes it adds, one per token of the
byte-level models); the time to first token goes into an HDR histogram, from the request's
send to its first text.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, constant, task

from proto2prod.benchmarks import hdr, locust_collect

KIND = os.environ.get("P2P_KIND", "json")
ITEMS: list[Any] = (
    json.loads(Path(os.environ["P2P_PAYLOAD"]).read_text()) if os.environ.get("P2P_PAYLOAD") else []
)
FIELDS = [f for f in os.environ.get("P2P_FIELDS", "").split(",") if f]
WARMUP_S = float(os.environ.get("P2P_WARMUP_S", "0"))
STATE: dict[str, Any] = {
    "started": None,
    "ttft": hdr.new(),
    "tokens": 0,
    "done": 0,
    "failed": 0,
    "collected": [],
}
_items = itertools.cycle(range(max(1, len(ITEMS))))


def _measuring() -> bool:
    started = STATE["started"]
    return started is not None and time.monotonic() - started >= WARMUP_S


class _Stream:
    """One stream's bookkeeping: its first token's time, its tokens, how it ended."""

    def __init__(self) -> None:
        self.sent = time.monotonic()
        self.first = False

    def tokens(self, count: int) -> None:
        if count <= 0:
            return
        if not self.first:
            self.first = True
            if _measuring():
                STATE["ttft"].record_value(max(1, int((time.monotonic() - self.sent) * 1e6)))
        if _measuring():
            STATE["tokens"] += count

    def end(self, ok: bool) -> None:
        if _measuring():
            STATE["done" if ok else "failed"] += 1


class StreamUser(HttpUser):
    wait_time = constant(0)

    @task
    def stream(self) -> None:
        item = ITEMS[next(_items)]
        stream = _Stream()
        ok = self._gradio(item, stream) if KIND == "gradio" else self._service(item, stream)
        stream.end(ok)

    def _service(self, item: Any, stream: _Stream) -> bool:
        body = {"input": item}
        with self.client.post(
            "/generate", json=body, stream=True, catch_response=True, name="generate"
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return False
            kind = ""
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[7:]
                    stream.tokens(1 if kind == "chunk" else 0)
                    if kind in ("done", "error"):
                        break
            if kind != "done":
                r.failure(f"the stream ended with {kind or 'nothing'}")
            return kind == "done"

    def _gradio(self, item: Any, stream: _Stream) -> bool:
        data = {"data": [item.get(name) for name in FIELDS]}
        with self.client.post(
            "/gradio_api/call/predict", json=data, catch_response=True, name="enqueue"
        ) as r:
            if r.status_code != 200:
                r.failure(f"enqueue HTTP {r.status_code}")
                return False
            event = r.json()["event_id"]
        with self.client.get(
            f"/gradio_api/call/predict/{event}", stream=True, catch_response=True, name="stream"
        ) as r:
            kind, shown = "", 0
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind in ("generating", "complete"):
                    text = (json.loads(line[6:]) or [""])[0] or ""
                    size = len(text.encode())
                    stream.tokens(size - shown)
                    shown = max(shown, size)
                    if kind == "complete":
                        break
            if kind != "complete":
                r.failure(f"the stream ended with {kind or 'nothing'}")
            return kind == "complete"


def _mine() -> dict[str, Any]:
    return {
        **{k: STATE[k] for k in ("tokens", "done", "failed")},
        "ttft": hdr.encode(STATE["ttft"]),
    }


locust_collect.install(STATE, "p2p_streams", _mine)
