"""A loopback TCP proxy the soak steers: pass, drop, delay, cut mid-transfer, corrupt.

Agents reach the broker (one proxy per fleet worker) and the hub's bundle downloads
(one proxy for the fleet: the hub's ``--public-url``) through these, so the harness can
partition them without touching the product:

- ``drop``: every open connection is closed, new ones are accepted and closed at once;
- ``delay``: every chunk relayed either way waits ``delay_s`` first;
- ``cut``: a connection's reply stream is closed after ``cut_after`` bytes (a download
  cut mid-transfer);
- ``corrupt``: in each reply stream, after the HTTP header (or at once for a stream
  without one), one byte in every ``corrupt_every`` is flipped (a corrupted download).

:meth:`set_mode` changes the mode for new data at once; ``pass`` relays faithfully.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

from hub.demo.netcut import Relay

Mode = Literal["pass", "drop", "delay", "cut", "corrupt"]


@dataclass
class ProxyCounters:
    """What the proxy did (for the fault log)."""

    connections: int = 0
    refused: int = 0
    cut: int = 0
    corrupted_bytes: int = 0


class FaultProxy(Relay):
    """Relay ``127.0.0.1:<port>`` to ``target`` until :meth:`close`, faults per :attr:`mode`."""

    CHUNK: ClassVar[int] = 16384

    def __init__(self, target_host: str, target_port: int, name: str = "proxy") -> None:
        """Listen on a free loopback port right away.

        Raises:
            OSError: no port could be bound.
        """
        self.name = name
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.cut_after = 0
        self.corrupt_every = 997
        self.counters = ProxyCounters()
        super().__init__(target_host, target_port, name=f"soak-{name}")

    def set_mode(
        self, mode: Mode, *, delay_s: float = 0.0, cut_after: int = 0, corrupt_every: int = 997
    ) -> None:
        """Switch to ``mode`` (``drop`` also closes every open connection)."""
        self.delay_s, self.cut_after, self.corrupt_every = delay_s, cut_after, corrupt_every
        self.mode = mode
        if mode in ("drop", "cut", "corrupt"):
            self._close_open()  # what follows goes through the new mode

    def _refuses(self) -> bool:
        if self.mode == "drop":
            self.counters.refused += 1
            return True
        return False

    def _connected(self) -> None:
        self.counters.connections += 1

    def _relay(self, source: socket.socket, sink: socket.socket, reply: bool) -> None:
        sent = 0
        body_at = -1  # offset where the HTTP body starts (-1: not seen yet)
        head = b""
        while data := source.recv(self.CHUNK):
            mode = self.mode
            if mode == "drop":
                return
            if mode == "delay" and self.delay_s > 0:
                time.sleep(self.delay_s)  # the fault itself: a slow link
            if reply and mode == "cut" and sent + len(data) > self.cut_after:
                sink.sendall(data[: max(0, self.cut_after - sent)])
                self.counters.cut += 1
                return
            if reply and mode == "corrupt":
                if body_at < 0:
                    head += data[:4096]
                    end = head.find(b"\r\n\r\n")
                    body_at = sent + end + 4 if end >= 0 else (0 if sent > 4096 else -1)
                if body_at >= 0:
                    data = self._corrupt(data, sent, body_at)
            sink.sendall(data)
            sent += len(data)

    def _corrupt(self, data: bytes, offset: int, body_at: int) -> bytes:
        out = bytearray(data)
        step = max(1, self.corrupt_every)
        for i in range(len(out)):
            pos = offset + i
            if pos >= body_at and (pos - body_at) % step == step // 2:
                out[i] ^= 0x5A
                self.counters.corrupted_bytes += 1
        return bytes(out)
