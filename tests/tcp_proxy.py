"""A TCP proxy in front of a real server, to make it hang or refuse on demand.

`pass` forwards both ways; `hang` accepts connections and holds every byte (what a wedged
server or a black-holed network looks like to a client); `refuse` closes each connection
as it arrives (a killed server behind a live load balancer).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["pass", "hang", "refuse"]


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.mode: Mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            self._open.append(client)
            if self.mode == "pass":
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                self._open.append(upstream)
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def set(self, mode: Mode) -> None:
        """Switch modes; `refuse` also cuts the connections already open."""
        self.mode = mode
        if mode == "refuse":
            self._cut()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Forward bytes while the mode is `pass`; in `hang`, swallow them: no answer."""
        try:
            while data := source.recv(65536):
                if self.mode == "pass":
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                s.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._cut()

    def _cut(self) -> None:
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
            s.close()
        self._open.clear()
