"""Raw little-endian tensor bytes as inputs: for inputs too large to write as JSON.

``Agent.predict(raw, shape=(64, 3))`` and the local API's ``application/octet-stream``
body (shape in ``X-Tensor-Shape``, dtype in ``X-Tensor-Dtype``) both come here. The bytes
are C-ordered (row-major) values of one of :data:`DTYPES`, little-endian whatever the
machine; the shape is one sample's (``[64, 3]``) or a batch's (``[8, 64, 3]``), and the
model's schema then checks it like any other input.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edge_agent.errors import PredictionError

#: The dtypes raw tensor bytes may have, each little-endian.
DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
}
#: At most this many dimensions (a batch of rank-4 images is 5).
MAX_RANK = 8
_SHAPE = re.compile(r"^\s*\[?\s*(\d+(?:\s*,\s*\d+)*)?\s*,?\s*\]?\s*$")


def parse_shape(text: str) -> tuple[int, ...]:
    """A shape header, ``64,3`` or ``[64, 3]``, as a tuple of positive ints.

    Raises:
        PredictionError: not a comma-separated list of 1 to :data:`MAX_RANK` positive
            integers.
    """
    match = _SHAPE.match(text)
    if not match or not match.group(1):
        raise PredictionError(
            f"tensor shape {text[:40]!r} is not a list of positive integers such as 64,3"
        )
    dims = tuple(int(d) for d in match.group(1).split(","))
    if len(dims) > MAX_RANK or 0 in dims:
        raise PredictionError(
            f"tensor shape {list(dims)} must have 1 to {MAX_RANK} dimensions, none 0"
        )
    return dims


def tensor_from_bytes(data: Any, shape: Any, dtype: str = "float32") -> np.ndarray:
    """``data`` (bytes-like, little-endian, C order) as an array of ``shape``.

    ``shape`` is a sequence of ints or a header string (see :func:`parse_shape`). The
    array is a read-only view of ``data`` for float32 (no copy), else converted.

    Raises:
        PredictionError: ``data`` is not bytes-like, the shape is malformed, the dtype is
            not one of :data:`DTYPES`, or the byte length is not the shape's.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PredictionError(f"raw tensor inputs must be bytes, not {type(data).__name__}")
    if shape is None:
        raise PredictionError("raw tensor bytes need a shape (e.g. shape=(64, 3))")
    if isinstance(shape, str):
        dims = parse_shape(shape)
    else:
        try:
            dims = parse_shape(",".join(str(int(d)) for d in shape))
        except (TypeError, ValueError) as exc:
            raise PredictionError(f"tensor shape {shape!r} is not a list of integers") from exc
    code = DTYPES.get(str(dtype).strip().lower())
    if code is None:
        raise PredictionError(f"tensor dtype {str(dtype)[:20]!r} is not one of {', '.join(DTYPES)}")
    count = int(np.prod(dims))
    expected = count * code.itemsize
    size = memoryview(data).nbytes
    if size != expected:
        raise PredictionError(
            f"tensor bytes are {size} long; shape {list(dims)} of {code.name} "
            f"(little-endian) needs {expected}"
        )
    x = np.frombuffer(data, dtype=code, count=count).reshape(dims)
    if code.kind == "f" and code.itemsize == 4:
        return x if x.dtype.isnative else x.astype(np.float32)
    return x.astype(np.float32)
