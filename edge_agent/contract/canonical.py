"""Canonical JSON: the exact bytes that signatures cover.

Keys sorted, no insignificant white space, UTF-8, no NaN or infinity. Two parties
that agree on a document agree on its canonical bytes, so a signature made by the
hub verifies on any device.
"""

from __future__ import annotations

import json
from typing import Any

from edge_agent.errors import ValidationError

try:  # several times faster; the hub installs it, a device may not
    import orjson
except ImportError:  # pragma: no cover - exercised in the tflite-runtime environment
    orjson = None  # type: ignore[assignment]


def canonical_bytes(document: Any) -> bytes:
    """Serialise ``document`` to canonical JSON bytes.

    Raises:
        ValidationError: the document holds NaN/infinity or a type JSON cannot carry.
    """
    try:
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"not canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def parse_json(data: bytes, what: str) -> Any:
    """Parse JSON bytes, naming ``what`` in the error.

    Raises:
        ValidationError: the bytes are not UTF-8 JSON, or hold NaN/infinity.
    """

    def _refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    if orjson is not None:
        # Strict JSON too: no NaN/Infinity, UTF-8 only, integers within 64 bits.
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"{what} is not valid JSON: {exc}") from exc
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from exc
