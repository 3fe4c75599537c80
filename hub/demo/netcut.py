"""A loopback TCP relay between one device and the broker that the story can cut.

While cut, open connections are closed and new ones are accepted and closed at once
(as a dropped mobile link looks to the device: it retries and fails); restored, it
relays again. The device's agent notices nothing else: it keeps serving predictions
and buffers its windows in its outbox until it reconnects.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Final

_CHUNK: Final = 65536


class LinkCut:
    """Relay ``127.0.0.1:<port>`` to ``target_host:target_port`` until :meth:`close`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        """Listen on a free loopback port (``port``) right away.

        Raises:
            OSError: no port could be bound.
        """
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="demo-linkcut", daemon=True)
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        """Whether the link is down now."""
        return self._cut.is_set()

    def cut(self) -> None:
        """Take the link down: close every relayed connection, refuse new ones."""
        self._cut.set()
        self._close_open()

    def restore(self) -> None:
        """Bring the link back."""
        self._cut.clear()

    def close(self) -> None:
        """Stop listening and close everything (idempotent)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._close_open()
        self._thread.join(5)

    def _close_open(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
