"""URLs safe to show in logs: the one redaction the agent and the hub share."""

from __future__ import annotations

from edge_agent.urls import redact_url


def test_credentials_query_and_fragment_never_reach_a_log() -> None:
    assert redact_url("https://u:p@h.example:8443/x/y?token=1#f") == "https://h.example:8443/x/y"
    assert redact_url("http://[::1]:80/a?q") == "http://[::1]:80/a"
    assert redact_url("http://[::1") == "<invalid url>"
