"""A real HTTP server on loopback that serves byte blobs, with Range support and faults.

Use it as a context manager::

    with BundleServer() as server:
        url = server.add("/b/x.efb", data, faults=Faults(drop_after=100_000, drop_times=1))
        ...
        assert server.ranges("/b/x.efb") == [None, "bytes=100000-"]

It is a stdlib :class:`http.server.ThreadingHTTPServer` on ``127.0.0.1`` (ephemeral
port) served from a background thread. Every response carries ``Connection: close``, so
no handler thread waits on an idle keep-alive socket. :meth:`BundleServer.stop` wakes
handlers that hang or stream (a shared stop event), shuts down every open connection
and joins every thread it started: shutdown is prompt and leaks no threads.

Faults (:class:`Faults`) are set per path: an error status the first K times, a
connection dropped after N body bytes the first K times, ``Range`` ignored, a lying or
missing ``Content-Length``, junk after the body or an endless stream, a hang before the
headers or mid-body, and a slow drip. Each request is recorded (:class:`RequestRecord`)
with its ``Range``/``If-Range`` headers, the status sent and the body bytes written.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

HOST: Final = "127.0.0.1"
_PIECE: Final = 16 * 1024
_JUNK: Final = b"\xee" * _PIECE


@dataclass(frozen=True)
class Faults:
    """How the server misbehaves for one path. A ``*_times`` of ``None`` means always.

    Attributes:
        status: answer with this HTTP status (e.g. 500) instead of the blob...
        status_times: ...for the first this-many requests.
        drop_after: close the connection after this many body bytes of a response...
        drop_times: ...for the first this-many responses that carry a body.
        ignore_range: always answer 200 with the whole blob, whatever ``Range`` says.
        send_length: ``False``: no ``Content-Length``; the body ends when the
            connection closes (HTTP/1.0-style), so a client cannot know its length.
        declared_length: announce this ``Content-Length`` instead of the real one.
        extra_bytes: append this many junk bytes after the body.
        endless: after the body, stream junk until the client hangs up.
        delay: seconds to hang (woken early by :meth:`BundleServer.stop`)...
        delay_after: ...after this many body bytes; ``None``: before the status line.
        drip: seconds to pause between 16 KiB pieces of the body (a slow server).
    """

    status: int | None = None
    status_times: int | None = None
    drop_after: int | None = None
    drop_times: int | None = None
    ignore_range: bool = False
    send_length: bool = True
    declared_length: int | None = None
    extra_bytes: int = 0
    endless: bool = False
    delay: float = 0.0
    delay_after: int | None = None
    drip: float = 0.0


NO_FAULTS: Final = Faults()


@dataclass
class RequestRecord:
    """One request the server received, and what it answered."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    authorization: bool
    status: int = 0
    bytes_sent: int = 0


@dataclass
class _Blob:
    data: bytes
    etag: str
    faults: Faults
    requests: int = 0
    failed: int = 0
    dropped: int = 0


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # non-daemon threads are tracked and joined by server_close()
    block_on_close = True

    def __init__(self, owner: BundleServer) -> None:
        self.owner = owner
        super().__init__((owner.host, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a DNS lookup that can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Keep unexpected handler errors for the tests instead of printing them.
        import sys

        error = sys.exc_info()[1]
        if error is not None:
            self.owner.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # socket timeout: a silent client cannot hold a thread for long
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._untrack(self.connection)

    def do_GET(self) -> None:
        self.server.owner._serve(self, send_body=True)

    def do_HEAD(self) -> None:
        self.server.owner._serve(self, send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest output is for failures."""


class BundleServer:
    """Serves registered byte blobs over HTTP on loopback; see the module docstring."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._blobs: dict[str, _Blob] = {}
        self._records: list[RequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> BundleServer:
        """Bind an ephemeral port and serve from a background thread."""
        if self._httpd is not None:
            raise RuntimeError("BundleServer already started")
        self._stop.clear()
        self._httpd = _HTTPServer(self)
        self._port = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"bundle-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut every open connection and join every thread. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        with self._lock:
            self._stop.set()
            connections = list(self._connections)
        httpd.shutdown()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()  # joins the handler threads
        thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- content and addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (still known after :meth:`stop`, so URLs can be built)."""
        if self._port is None:
            raise RuntimeError("BundleServer was never started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str, *, userinfo: str | None = None, query: str | None = None) -> str:
        """The URL of ``path``, optionally with ``user:pass@`` credentials and a query."""
        auth = f"{userinfo}@" if userinfo else ""
        tail = f"?{query}" if query else ""
        return f"http://{auth}{self.host}:{self.port}{path}{tail}"

    def add(
        self, path: str, data: bytes, *, faults: Faults = NO_FAULTS, etag: str | None = None
    ) -> str:
        """Serve ``data`` at ``path`` (replacing what was there); returns its URL."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        tag = etag or f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        with self._lock:
            self._blobs[path] = _Blob(bytes(data), tag, faults)
        return self.url(path)

    def set_faults(self, path: str, faults: Faults = NO_FAULTS) -> None:
        """Change the faults of ``path`` and reset its fault counters."""
        with self._lock:
            blob = self._blobs[path]
            self._blobs[path] = replace(blob, faults=faults, failed=0, dropped=0)

    # --- what happened -----------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[RequestRecord]:
        """Records of the requests received (for ``path`` only, if given), in order."""
        with self._lock:
            return [replace(r) for r in self._records if path is None or r.path == path]

    def request_count(self, path: str) -> int:
        """How many requests ``path`` received."""
        return len(self.requests(path))

    def ranges(self, path: str) -> list[str | None]:
        """The ``Range`` header of each request for ``path`` (``None`` where absent)."""
        return [r.range for r in self.requests(path)]

    def bytes_sent(self, path: str) -> int:
        """Body bytes written for ``path`` over all its responses."""
        return sum(r.bytes_sent for r in self.requests(path))

    # --- request handling (handler threads) --------------------------------------------

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            stopping = self._stop.is_set()
        if stopping:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _serve(self, h: _Handler, *, send_body: bool) -> None:
        h.close_connection = True
        record = RequestRecord(
            method=h.command,
            path=urlsplit(h.path).path,
            range=h.headers.get("Range"),
            if_range=h.headers.get("If-Range"),
            authorization="Authorization" in h.headers,
        )
        fail = drop = False
        with self._lock:
            self._records.append(record)
            blob = self._blobs.get(record.path)
            if blob is not None:
                blob.requests += 1
                f = blob.faults
                fail = f.status is not None and (
                    f.status_times is None or blob.failed < f.status_times
                )
                if fail:
                    blob.failed += 1
                else:
                    drop = f.drop_after is not None and (
                        f.drop_times is None or blob.dropped < f.drop_times
                    )
                    if drop:
                        blob.dropped += 1
        if blob is None:
            self._send_status(h, record, HTTPStatus.NOT_FOUND)
            return
        faults = blob.faults
        if faults.delay and faults.delay_after is None and self._stop.wait(faults.delay):
            return
        if fail:
            assert faults.status is not None
            self._send_status(h, record, faults.status)
            return

        data = blob.data
        start, end = 0, len(data)  # end exclusive
        status = HTTPStatus.OK
        header = None if faults.ignore_range else record.range
        if header is not None and record.if_range is not None and record.if_range != blob.etag:
            header = None  # resource changed since the client's copy: send it whole
        if header is not None:
            wanted = _parse_range(header, len(data))
            if wanted == "unsatisfiable":
                self._send_status(
                    h,
                    record,
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    extra={"Content-Range": f"bytes */{len(data)}"},
                )
                return
            if isinstance(wanted, tuple):
                start, end = wanted
                status = HTTPStatus.PARTIAL_CONTENT

        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("ETag", blob.etag)
        if not faults.ignore_range:
            h.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        if faults.declared_length is not None:
            h.send_header("Content-Length", str(faults.declared_length))
        elif faults.send_length:
            h.send_header("Content-Length", str(end - start))
        h.send_header("Connection", "close")
        h.end_headers()
        record.status = int(status)
        if send_body:
            body = memoryview(data)[start:end]
            self._send_body(h, record, body, faults, faults.drop_after if drop else None)

    def _send_status(
        self, h: _Handler, record: RequestRecord, status: int, extra: dict[str, str] | None = None
    ) -> None:
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        h.send_response(status)
        for name, value in (extra or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        record.status = status
        with contextlib.suppress(OSError):
            h.wfile.write(body)

    def _send_body(
        self,
        h: _Handler,
        record: RequestRecord,
        body: memoryview,
        faults: Faults,
        drop_after: int | None,
    ) -> None:
        sent = 0
        delayed = faults.delay_after is None
        try:
            for whole in _pieces(body, faults):
                piece = whole
                if self._stop.is_set():
                    return
                pause_at = faults.delay_after
                if not delayed and pause_at is not None and sent + len(piece) >= pause_at:
                    head = piece[: pause_at - sent]
                    h.wfile.write(head)
                    sent += len(head)
                    piece = piece[len(head) :]
                    delayed = True
                    if self._stop.wait(faults.delay):
                        return
                if drop_after is not None and sent + len(piece) > drop_after:
                    h.wfile.write(piece[: drop_after - sent])
                    sent = drop_after
                    h.connection.shutdown(socket.SHUT_WR)  # a clean FIN: the client sees EOF
                    return
                h.wfile.write(piece)
                sent += len(piece)
                if faults.drip and self._stop.wait(faults.drip):
                    return
        except OSError:
            return  # the client hung up (endless stream refused, timeout, ...)
        finally:
            with self._lock:
                record.bytes_sent = sent


def _pieces(body: memoryview, faults: Faults) -> Iterator[bytes | memoryview]:
    for i in range(0, len(body), _PIECE):
        yield body[i : i + _PIECE]
    extra = faults.extra_bytes
    while extra > 0:
        yield _JUNK[: min(extra, _PIECE)]
        extra -= _PIECE
    while faults.endless:
        yield _JUNK


def _parse_range(header: str, length: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, end_exclusive)``, ``"unsatisfiable"``, or ``None`` to ignore the header.

    Only a single ``bytes=`` range is honoured (``a-``, ``a-b`` or ``-n``); anything
    else is ignored, as RFC 9110 allows.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:  # suffix range: the last n bytes
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(0, length - n), length
        start = int(first)
        stop = int(last) + 1 if last else length
    except ValueError:
        return None
    if start < 0 or stop <= start:
        return None
    if start >= length:
        return "unsatisfiable"
    return start, min(stop, length)


@contextlib.contextmanager
def refused_url(path: str = "/b/x.efb") -> Iterator[str]:
    """A loopback URL whose connections are refused: the port is bound but not listening.

    Holding the bound socket keeps the port from being reused while the URL is in use.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        yield f"http://{HOST}:{port}{path}"
    finally:
        sock.close()
