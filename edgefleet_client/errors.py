"""The client's one exception type."""

from __future__ import annotations


class HubError(Exception):
    """A hub request failed: ``status`` is the HTTP status (0 when no answer came: the
    hub was unreachable, the TLS handshake failed, or the connection dropped) and
    ``message`` the hub's one-line ``{"error": ...}`` text, or a line saying what went
    wrong on the way."""

    def __init__(self, status: int, message: str) -> None:
        """Keep the status and the one-line message."""
        self.status = status
        self.message = " ".join(message.split())
        super().__init__(f"{status}: {self.message}" if status else self.message)

    @property
    def unreachable(self) -> bool:
        """No HTTP answer came (worth retrying)."""
        return self.status == 0

    @property
    def auth(self) -> bool:
        """401 (no valid token) or 403 (the token lacks a scope)."""
        return self.status in (401, 403)
