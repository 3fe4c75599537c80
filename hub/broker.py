"""The embedded MQTT broker (amqtt) for the default, single-machine setup.

Production fleets point hub and agents at Mosquitto, EMQX or any MQTT 3.1.1+ broker
instead; nothing in EdgeFleet depends on this broker's particulars. It runs its own
asyncio loop in a background thread so that synchronous code (the hub, tests,
``make demo``) can start and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from hub.errors import HubError


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` in a background thread.

    Anonymous access: bind it to loopback (the default) or put it behind a network
    boundary; use Mosquitto with the ``deploy/`` configuration for per-device ACLs.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        """Configure (but do not start) the broker; ``port=None`` picks a free port."""
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Start listening; returns once the broker accepts connections.

        Raises:
            HubError: the broker did not start (port in use...).
        """
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise HubError(
                f"embedded MQTT broker did not start on {self.host}:{self.port}: "
                f"{self._error or 'timeout'}"
            )
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        try:
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        loop.run_forever()
        pending = asyncio.all_tasks(loop)  # let amqtt's client tasks end inside the loop
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _shutdown(self) -> None:
        # Close the listening sockets first: amqtt's shutdown can fail half-way (a
        # client session that will not clean up) and must not leave the port bound.
        for server in list(getattr(self._broker, "_servers", {}).values()):
            with contextlib.suppress(Exception):
                await server.close_instance()
        await self._broker.shutdown()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker and wait for its thread; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout)  # closes the listening socket before we return
            except Exception as exc:
                logging.getLogger("edgefleet.hub").warning(
                    "embedded broker shutdown: %s", repr(exc)
                )
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
