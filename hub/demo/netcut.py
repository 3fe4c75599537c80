"""Loopback TCP relays: :class:`Relay`, the core, and :class:`LinkCut`, a relay between one
device and the broker that the demo's story can cut.

While cut, open connections are closed and new ones are accepted and closed at once
(as a dropped mobile link looks to the device: it retries and fails); restored, it
relays again. The device's agent notices nothing else: it keeps serving predictions
and buffers its windows in its outbox until it reconnects. The fault-injection soak's
proxy (``benchmarks/soak/proxy.py``) is a :class:`Relay` too, with more faults.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import ClassVar


class Relay:
    """Relay ``127.0.0.1:<port>`` to ``target`` until :meth:`close`, a thread per
    direction of each connection. Subclasses decide which new connections are refused
    (:meth:`_refuses`) and may replace the relaying of one direction (:meth:`_relay`)."""

    #: Bytes read at a time.
    CHUNK: ClassVar[int] = 65536

    def __init__(self, target_host: str, target_port: int, name: str = "relay") -> None:
        """Listen on a free loopback port (``port``) right away.

        Raises:
            OSError: no port could be bound.
        """
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = int(self._server.getsockname()[1])
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and close everything (idempotent)."""
        self._closed.set()
        with contextlib.suppress(OSError):  # wakes the blocked accept(): close alone does not
            self._server.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._server.close()
        self._close_open()
        self._thread.join(5)

    def _refuses(self) -> bool:
        """Whether a new connection is closed at once (the link is down)."""
        return False

    def _connected(self) -> None:
        """Called for each connection relayed."""

    def _relay(self, source: socket.socket, sink: socket.socket, reply: bool) -> None:
        """Copy ``source`` to ``sink`` until ``source`` ends (``reply``: the target's side).

        Raises:
            OSError: either socket failed (the connection then ends).
        """
        while data := source.recv(self.CHUNK):
            sink.sendall(data)

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
            if self._refuses():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._connected()
            with self._lock:
                self._open.update((client, upstream))
            for a, b, reply in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(a, b, reply), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, reply: bool) -> None:
        try:
            self._relay(source, sink, reply)
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


class LinkCut(Relay):
    """A :class:`Relay` the story cuts and restores (see the module docstring)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        """Listen on a free loopback port (``port``) right away.

        Raises:
            OSError: no port could be bound.
        """
        self._cut = threading.Event()
        super().__init__(target_host, target_port, name="demo-linkcut")

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

    def _refuses(self) -> bool:
        return self._cut.is_set()
