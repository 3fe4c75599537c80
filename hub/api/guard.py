"""What every API request with a body passes before a route sees it.

:class:`BodyGuard` (pure ASGI) authenticates a request that carries a body *before*
any of the body is read, refuses a declared ``Content-Length`` over the limit, and
stops a body that streams past the limit (chunked uploads declare nothing). FastAPI
parses multipart forms before it runs a route's dependencies, so without this guard an
anonymous client could make the hub receive and spool a whole upload to disk before it
is told 401. Its refusals have the API's one error shape (:mod:`hub.api.errors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from hub.api.errors import error_body
from hub.tokens import TokenStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Methods whose requests carry no body worth guarding.
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


class _BodyTooLargeError(Exception):
    """The request body grew past the limit while streaming."""


async def _respond(
    send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = error_body(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class BodyGuard:
    """ASGI middleware: authentication before the body, and a body size limit."""

    def __init__(self, app: ASGIApp, tokens: TokenStore, max_body_bytes: int) -> None:
        """Guard ``app``; requests with a body need a valid token in ``tokens`` and at
        most ``max_body_bytes`` of body."""
        self.app = app
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse (401, 400 or 413, without reading the body) or pass the request on."""
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)
            return
        headers: Sequence[tuple[bytes, bytes]] = scope.get("headers", ())
        token = bearer_token(headers)
        if token is None or self.tokens.authenticate(token) is None:
            await _respond(
                send, 401, "missing, unknown or revoked token", [(b"www-authenticate", b"Bearer")]
            )
            return
        declared = next((v for k, v in headers if k.lower() == b"content-length"), None)
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _respond(send, 400, "Content-Length is not a number")
                return
            if length > self.max_body_bytes:
                await _respond(send, 413, f"request body over {self.max_body_bytes} bytes")
                return
        received = 0
        started = overflowed = False
        too_large = f"request body over {self.max_body_bytes} bytes"

        async def counting_receive() -> Message:
            nonlocal received, overflowed
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    overflowed = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns any failure while parsing a form into its own 400; once the
            # body overflowed, whatever the app answers is replaced by the 413.
            nonlocal started
            if message["type"] == "http.response.start":
                if started:
                    return
                started = True
                if overflowed:
                    await _respond(send, 413, too_large)
                    return
            elif overflowed:
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLargeError:
            if not started:
                await _respond(send, 413, too_large)
