"""Canonical JSON: the stdlib parser and the optional fast one (orjson) agree."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.contract import canonical
from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.errors import ValidationError

PARSERS = ["stdlib", "orjson"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@pytest.fixture(params=PARSERS)
def parser(request, monkeypatch):
    if request.param == "stdlib":
        monkeypatch.setattr(canonical, "orjson", None)
    elif canonical.orjson is None:
        pytest.skip("orjson is not installed here (the tflite-runtime environment)")
    return request.param


@given(value=json_values)
def test_both_parsers_read_back_what_canonical_bytes_wrote(value):
    for name in PARSERS:
        if name == "orjson" and canonical.orjson is None:
            continue
        saved = canonical.orjson
        try:
            if name == "stdlib":
                canonical.orjson = None  # type: ignore[assignment]
            got = parse_json(canonical_bytes(value), "doc")
        finally:
            canonical.orjson = saved
        assert canonical_bytes(got) == canonical_bytes(value)


@pytest.mark.parametrize(
    "data",
    [b"NaN", b"[Infinity]", b"[-Infinity]", b"\xff\xfe", b"{", b'{"a": 1} x', b"", b"[1,]"],
)
def test_both_parsers_refuse_what_is_not_strict_json(parser, data):
    with pytest.raises(ValidationError, match="doc is not valid JSON"):
        parse_json(data, "doc")


def test_floats_survive_both_parsers_exactly(parser):
    values = [0.1, 1e-300, 5e-324, 1.7976931348623157e308, -0.0, 2.0**53 + 1, math.pi]
    assert parse_json(canonical_bytes(values), "doc") == values
