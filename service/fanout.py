"""What one worker of a service learns, every worker acts on.

A webhook delivery, a forced reload or a canary rollback reaches one BentoML worker (the
one whose connection it came on); with `--workers 2` the others would go on serving what
they had. The workers of one service share a folder, `<temp dir>/proto2prod-bus/<arbiter
pid>` (they are children of one BentoML arbiter): an event is one JSON line appended to its
`events.jsonl` (a single `write` under `PIPE_BUF`, so lines never interleave), and each
worker looks at the file's size every `POLL_S` and acts on the lines it has not seen,
except its own. The folder also holds the service's secret (the canary's hash key), made
once by whichever worker comes first, so a key lands on one side in every worker.

What a worker does with an event is its own registry check: the event says *look now*,
never *serve version N*, so what each worker serves is what the registry says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from proto2prod.service.launch import alive

log = logging.getLogger("proto2prod.service")

POLL_S = 0.1
"""How often a worker looks for new events (a stat of one file)."""
MAX_LINE = 3500
"""Under PIPE_BUF (4096): an append this short is never interleaved with another."""


class Bus:
    """The workers' shared event file and secret."""

    def __init__(self, folder: Path | None = None) -> None:
        root = Path(tempfile.gettempdir()) / "proto2prod-bus"
        self.folder = folder or root / str(os.getppid())
        if folder is None:
            _remove_stale(root, keep=os.getppid())
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.events = self.folder / "events.jsonl"
        self.pid = os.getpid()
        self._offset = self.events.stat().st_size if self.events.exists() else 0

    def secret(self) -> bytes:
        """The service's secret: made once (O_EXCL), then read by every worker."""
        path = self.folder / "secret"
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        for _ in range(100):  # the creator may not have written it yet
            text = path.read_text().strip()
            if len(text) == 64:
                return bytes.fromhex(text)
            time.sleep(0.01)
        raise RuntimeError(f"{path} does not hold a secret; remove it and restart the service")

    def publish(self, kind: str, **data: Any) -> None:
        """Tell the other workers (`kind` with its data); never raises."""
        line = json.dumps({"kind": kind, "pid": self.pid, **data}, separators=(",", ":"))
        if len(line) > MAX_LINE:
            log.error("fan-out: event %s is too long to send (%d bytes)", kind, len(line))
            return
        try:
            fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("fan-out: could not tell the other workers about %s: %s", kind, exc)

    def take(self) -> list[dict[str, Any]]:
        """The other workers' events since the last call."""
        try:
            size = self.events.stat().st_size
        except FileNotFoundError:
            return []
        if size <= self._offset:
            return []
        with self.events.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(size - self._offset)
        complete = chunk.rfind(b"\n") + 1  # a line still being written waits for next time
        self._offset += complete
        found = []
        for raw in chunk[:complete].splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("pid") != self.pid:
                found.append(event)
        return found

    async def listen(self, act: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Forever: act on each other worker's event (a failure is logged, never raised)."""
        while True:
            await asyncio.sleep(POLL_S)
            try:
                events = await asyncio.to_thread(self.take)
            except OSError as exc:
                log.warning("fan-out: cannot read %s: %s", self.events, exc)
                continue
            for event in events:
                try:
                    await act(event)
                except Exception:
                    log.exception("fan-out: acting on %s failed", event.get("kind"))


def _remove_stale(root: Path, *, keep: int) -> None:
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.name.isdigit() and int(folder.name) != keep and not alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
