"""The wire contract between hub and devices, defined once.

Canonical JSON, topics, messages, signed directives, bundle manifests and bundles,
trust roots and Ed25519, input schemas, reference statistics, smoke samples, histogram
layouts and the metrics window with its exact merge. Pure: no sqlite3, paho, httpx or
daemon code, so the hub imports it (and nothing else of the agent but an explicit
allow-list, see ``tests/test_boundaries.py``).
"""
