"""The loopback relays: the demo's cuttable link and the soak's fault proxy share one
relay core (hub.demo.netcut.Relay); both are driven here against a real echo server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from benchmarks.soak.proxy import FaultProxy
from hub.demo.netcut import LinkCut


@pytest.fixture
def echo() -> Iterator[int]:
    """A loopback server that echoes what it reads (the target behind the relays)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def roundtrip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through the relay and read until as many bytes came back or the
    relay closed the connection. (No half-close: a relay ends a connection when either
    side does, as MQTT and HTTP clients never half-close.)"""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(payload)
        except OSError:
            return b""  # closed at once (a refused connection)
        out = b""
        while len(out) < len(payload):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_link_relays_is_cut_then_restored(echo):
    link = LinkCut("127.0.0.1", echo)
    try:
        assert roundtrip(link.port, b"hello") == b"hello"
        held = socket.create_connection(("127.0.0.1", link.port), timeout=10)
        held.sendall(b"x")
        assert held.recv(1) == b"x"  # relayed, and open
        link.cut()
        assert link.is_cut
        assert held.recv(1) == b""  # the open connection was closed
        held.close()
        assert roundtrip(link.port, b"lost") == b""  # a new one is accepted and closed
        link.restore()
        assert roundtrip(link.port, b"back") == b"back"
    finally:
        link.close()


def test_fault_proxy_counts_drops_cuts_replies_and_corrupts_only_after_the_header(echo):
    proxy = FaultProxy("127.0.0.1", echo, name="test")
    try:
        assert roundtrip(proxy.port, b"a" * 100) == b"a" * 100
        assert proxy.counters.connections == 1
        proxy.set_mode("drop")
        assert roundtrip(proxy.port, b"b") == b""
        assert proxy.counters.refused == 1
        proxy.set_mode("cut", cut_after=10)
        assert roundtrip(proxy.port, b"c" * 100) == b"c" * 10
        assert proxy.counters.cut == 1
        proxy.set_mode("corrupt", corrupt_every=4)
        head = b"HTTP/1.1 200 OK\r\n\r\n"
        body = bytes(40)
        got = roundtrip(proxy.port, head + body)
        assert got[: len(head)] == head  # the header passes untouched
        assert got[len(head) :] != body and len(got) == len(head) + len(body)
        assert proxy.counters.corrupted_bytes == 10  # one byte in four of the body
    finally:
        proxy.close()
