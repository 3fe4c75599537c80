"""Strict checks for JSON documents: exact field sets and exact types.

Small on purpose (the agent stays light): each wire document is parsed by a
``from_json``-style function that calls these helpers, so a missing, extra or
wrongly typed field fails with one line that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, TypeGuard, TypeVar

from edge_agent.errors import ValidationError

T = TypeVar("T")

#: The largest integer any wire document may carry (counts, versions, sequences): exact
#: in a float64 and in every JSON parser, and far inside SQLite's 64-bit integers, so a
#: valid message can always be stored.
MAX_INT: Final = 2**53

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_STR_ONLY = frozenset({str})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def as_object(value: Any, where: str) -> dict[str, Any]:
    """Return ``value`` as a JSON object.

    Raises:
        ValidationError: it is not an object with string keys.
    """
    if not isinstance(value, dict) or not set(map(type, value)) <= _STR_ONLY:
        raise ValidationError(f"{where}: expected an object, got {_kind(value)}")
    return value


def exact_fields(
    value: Any, where: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Check that an object has every ``required`` field and nothing unknown.

    Raises:
        ValidationError: a field is missing or unexpected, or ``value`` is not an object.
    """
    obj = as_object(value, where)
    missing = sorted(required - obj.keys())
    if missing:
        raise ValidationError(f"{where}: missing field(s) {', '.join(missing)}")
    extra = sorted(obj.keys() - required - optional)
    if extra:
        raise ValidationError(f"{where}: unexpected field(s) {', '.join(extra)}")
    return obj


def field(obj: Mapping[Any, Any], key: Any, kind: type[T], where: str) -> T:
    """Return ``obj[key]`` checked to be of ``kind`` (bool is never an int here).

    Raises:
        ValidationError: the value has another type.
    """
    value = obj[key]
    ok = isinstance(value, kind)
    if kind in (int, float) and isinstance(value, bool):
        ok = False
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not ok:
        raise ValidationError(f"{_path(where, key)}: expected {kind.__name__}, got {_kind(value)}")
    return value  # type: ignore[no-any-return]


def positive_int(obj: Mapping[str, Any], key: str, where: str, minimum: int = 1) -> int:
    """Return ``obj[key]`` as an int from ``minimum`` to :data:`MAX_INT`.

    Raises:
        ValidationError: not an int, too small or too large.
    """
    value = field(obj, key, int, where)
    if value < minimum:
        raise ValidationError(f"{where}.{key}: must be >= {minimum}, got {value}")
    if value > MAX_INT:
        raise ValidationError(f"{where}.{key}: must be <= 2**53")
    return value


def sha256_hex(obj: Mapping[str, Any], key: str, where: str) -> str:
    """Return ``obj[key]`` checked to be a lowercase hex SHA-256.

    Raises:
        ValidationError: it is not 64 lowercase hex digits.
    """
    value = field(obj, key, str, where)
    if not _SHA256_HEX.fullmatch(value):
        raise ValidationError(f"{where}.{key}: expected 64 lowercase hex digits")
    return value


def is_safe_name(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a safe identifier (see :func:`safe_name`)."""
    return isinstance(value, str) and bool(_NAME.fullmatch(value)) and not value.startswith("..")


def safe_name(value: Any, where: str) -> str:
    """Return ``value`` checked to be a safe identifier (letters, digits, ``._-``).

    Safe names never hold path separators or ``..`` at the start, so they can name
    files and MQTT topic levels.

    Raises:
        ValidationError: the name is empty, too long or has other characters.
    """
    if not is_safe_name(value):
        raise ValidationError(
            f"{where}: {value!r} is not a valid name (1-128 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit)"
        )
    return value


def list_of(obj: Mapping[str, Any], key: str, kind: type[T], where: str) -> list[T]:
    """Return ``obj[key]`` checked to be a list whose items are all ``kind``.

    Raises:
        ValidationError: not a list, or an item of another type.
    """
    items = field(obj, key, list, where)
    return [field(dict(enumerate(items)), i, kind, f"{where}.{key}") for i in range(len(items))]


def _path(where: str, key: Any) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
