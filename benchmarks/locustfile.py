"""Locust users for the benchmark: one per way of calling a model, HDR-recorded.

Configured by the environment (the benchmark runner sets it): `P2P_KIND` (json or
gradio), `P2P_PATH` (route or Gradio api name), `P2P_PAYLOAD` (a JSON file: the list of
items to send, one per request), `P2P_WARMUP_S`, `P2P_OUT` (where the master writes the
merged histogram), `P2P_RATE` (open loop: requests/s over all users, else closed loop),
`P2P_LIGHT_PATH` (a light GET route to time beside the model route), `P2P_VERSION_LOG`
(a file of `t,status,version` lines, for the update timeline).

Latency goes into an HDR histogram per worker; workers send theirs to the master, which
merges them, so `--workers N` (master/worker, also across machines) loses nothing. In open
loop each request has a scheduled send time and its latency counts from then: a stalled
server shows in the percentiles instead of silently slowing the senders down
(coordinated omission).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, task

from proto2prod.benchmarks import hdr, locust_collect

KIND = os.environ.get("P2P_KIND", "json")
PATH = os.environ.get("P2P_PATH", "/predict")
ITEMS: list[Any] = (
    json.loads(Path(os.environ["P2P_PAYLOAD"]).read_text()) if os.environ.get("P2P_PAYLOAD") else []
)
WARMUP_S = float(os.environ.get("P2P_WARMUP_S", "0"))
RATE = float(os.environ.get("P2P_RATE", "0"))
LIGHT_PATH = os.environ.get("P2P_LIGHT_PATH", "")
VERSION_LOG = os.environ.get("P2P_VERSION_LOG", "")

STATE: dict[str, Any] = {
    "started": None,
    "model": hdr.new(),
    "light": hdr.new(),
    "errors": 0,
    "light_errors": 0,
    "collected": [],
}
_items = itertools.cycle(range(max(1, len(ITEMS))))


def _measuring() -> bool:
    started = STATE["started"]
    return started is not None and time.monotonic() - started >= WARMUP_S


def _record(name: str, latency_s: float, ok: bool) -> None:
    if not _measuring():
        return
    if name == "light":
        STATE["light"].record_value(max(1, int(latency_s * 1e6))) if ok else None
        STATE["light_errors"] += 0 if ok else 1
    elif ok:
        STATE["model"].record_value(max(1, int(latency_s * 1e6)))
    else:
        STATE["errors"] += 1


class ModelUser(FastHttpUser):
    """Calls the model route the way its real clients do."""

    wait_time = constant(0)
    weight = 100

    def on_start(self) -> None:
        self.scheduled = time.monotonic()

    @task
    def predict(self) -> None:
        start = time.monotonic()
        if RATE:
            users = max(1, self.environment.runner.user_count if self.environment.runner else 1)
            self.scheduled += users / RATE
            if self.scheduled > start:
                gevent.sleep(self.scheduled - start)
            start = self.scheduled  # latency counts from the scheduled send time
        item = ITEMS[next(_items)]
        ok, version = self._gradio(item) if KIND == "gradio" else self._json(item)
        _record("model", time.monotonic() - start, ok)
        if VERSION_LOG and _measuring():
            with open(VERSION_LOG, "a") as log:
                log.write(f"{time.time():.3f},{int(ok)},{version}\n")

    def _json(self, item: Any) -> tuple[bool, str]:
        body = {"inputs": [item]}
        with self.client.post(PATH, json=body, catch_response=True, name="predict") as r:
            ok = r.status_code == 200
            if not ok:
                r.failure(f"HTTP {r.status_code}")
            return ok, r.headers.get("X-Model-Version", "") if r.headers else ""

    def _gradio(self, item: Any) -> tuple[bool, str]:
        """Upload, enqueue, then read the event stream: what Gradio's own page does."""
        import base64

        png = base64.b64decode(item)
        with self.client.post(
            "/gradio_api/upload",
            files={"files": ("x.png", png, "image/png")},
            catch_response=True,
            name="upload",
        ) as r:
            if r.status_code != 200:
                r.failure(f"upload HTTP {r.status_code}")
                return False, ""
            path = r.json()[0]
        data = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}
        with self.client.post(
            f"/gradio_api/call/{PATH}", json=data, catch_response=True, name="enqueue"
        ) as r:
            if r.status_code != 200:
                r.failure(f"enqueue HTTP {r.status_code}")
                return False, ""
            event = r.json()["event_id"]
        with self.client.get(
            f"/gradio_api/call/{PATH}/{event}", catch_response=True, name="result"
        ) as r:
            text = r.text or ""
            ok = r.status_code == 200 and "event: complete" in text
            if not ok:
                r.failure("no complete event")
            version = ""
            if ok and "version " in text:
                version = text.split("version ", 1)[1].split("*", 1)[0].strip()
            return ok, version


class LightUser(FastHttpUser):
    """A person loading a light page while the model route is saturated."""

    wait_time = constant(0.1)
    fixed_count = 1  # named on the command line only when a light route is timed

    @task
    def light(self) -> None:
        start = time.monotonic()
        with self.client.get(LIGHT_PATH, catch_response=True, name="light") as r:
            ok = r.status_code == 200
        _record("light", time.monotonic() - start, ok)


def _mine() -> dict[str, Any]:
    return {
        "model": hdr.encode(STATE["model"]),
        "light": hdr.encode(STATE["light"]),
        "errors": STATE["errors"],
        "light_errors": STATE["light_errors"],
    }


locust_collect.install(STATE, "p2p_hdr", _mine)
