"""Server-sent events: a pure line parser and the reconnect back-off (no I/O here)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class SseMessage:
    """One dispatched server-sent event."""

    id: str | None
    event: str
    data: str


class SseParser:
    """Feed lines (without their newline); :meth:`feed` returns a message when a blank
    line ends one. Comments (``: keep-alive``) and unknown fields are skipped."""

    def __init__(self) -> None:
        """Start with nothing buffered."""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, line: str) -> SseMessage | None:
        """Take one line; the finished message, if this line ended one."""
        if line == "":
            if not self._data:
                self._event, self._id = "", None
                return None
            msg = SseMessage(self._id, self._event or "message", "\n".join(self._data))
            self._data, self._event, self._id = [], "", None
            return msg
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None


@dataclass
class Backoff:
    """Exponential back-off with full jitter: ``initial_s`` doubling up to ``max_s``;
    :meth:`reset` after a success."""

    initial_s: float = 0.5
    max_s: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count it)."""
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311  (jitter, not crypto)

    def reset(self) -> None:
        """A success: start from ``initial_s`` again."""
        self.attempt = 0
