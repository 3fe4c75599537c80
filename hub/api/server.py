"""uvicorn serving the API on a background thread (:class:`ApiServer`)."""

from __future__ import annotations

import pathlib
import threading

import uvicorn
from fastapi import FastAPI


class ApiServer:
    """uvicorn serving an app on ``host:port`` in a background thread (``port=0``: any)."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_cert: pathlib.Path | None = None,
        tls_key: pathlib.Path | None = None,
    ) -> None:
        """Configure; :meth:`start` binds and serves (HTTPS with ``tls_cert``/``tls_key``).

        Raises:
            ValueError: only one of ``tls_cert`` and ``tls_key`` is given.
        """
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("hub API: TLS needs both a certificate and its key")
        self.tls = tls_cert is not None
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            # An open event stream never ends by itself: at shutdown, connections get
            # 2 s to finish, then their tasks are cancelled (stop() used to hang 10 s).
            timeout_graceful_shutdown=2,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, once started."""
        sockets = self.server.servers[0].sockets if self.server.servers else []
        host, port = sockets[0].getsockname()[:2] if sockets else (self.config.host, 0)
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def start(self, timeout: float = 10.0) -> ApiServer:
        """Serve in a background thread; returns once the socket listens.

        Raises:
            RuntimeError: the server did not start in time.
        """
        self._thread = threading.Thread(target=self.server.run, name="hub-api", daemon=True)
        self._thread.start()
        started = threading.Event()

        def wait() -> None:
            while not self.server.started and self._thread and self._thread.is_alive():
                self._thread.join(0.01)
            started.set()

        threading.Thread(target=wait, daemon=True).start()
        if not started.wait(timeout) or not self.server.started:
            raise RuntimeError("the hub API did not start")
        return self

    def stop(self) -> None:
        """Stop serving (open event streams end first) and wait for the thread."""
        hub = getattr(getattr(self.config.app, "state", None), "hub", None)
        stopping = getattr(hub, "stopping", None)
        if isinstance(stopping, threading.Event):
            stopping.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
