"""Reusable test helpers that run real services on loopback (HTTP bundle server, ...)."""
