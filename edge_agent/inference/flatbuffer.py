"""What a TFLite flatbuffer declares, read without the runtime: its subgraphs and the
custom operators it needs.

Neither runtime's Python API says how many subgraphs a model has (``tflite-runtime``
has no ``num_subgraphs``) or which custom operator it failed on in a form worth
showing, so the model loader reads these two facts from the file itself (the TFLite
schema: ``Model.operator_codes`` is field 1, ``Model.subgraphs`` field 2;
``OperatorCode.custom_code`` is field 1). Every offset is bounds-checked: a garbled
file raises one line, never an IndexError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from edge_agent.errors import ModelLoadError

_MODEL_OPERATOR_CODES = 1
_MODEL_SUBGRAPHS = 2
_OPCODE_CUSTOM_CODE = 1


@dataclass(frozen=True)
class ModelOutline:
    """The structure of a TFLite model that the runtime's API does not expose."""

    subgraphs: int
    custom_ops: tuple[str, ...]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, at: int) -> int:
        if at < 0 or at + 4 > len(self.data):
            raise ModelLoadError("the model file is truncated or not a TFLite flatbuffer")
        value: int = struct.unpack_from("<I", self.data, at)[0]
        return value

    def u16(self, at: int) -> int:
        if at < 0 or at + 2 > len(self.data):
            raise ModelLoadError("the model file is truncated or not a TFLite flatbuffer")
        value: int = struct.unpack_from("<H", self.data, at)[0]
        return value

    def field(self, table: int, index: int) -> int | None:
        """The absolute position of ``table``'s field ``index``, or None when absent."""
        vtable = table - (self.u32(table) ^ 0x80000000) + 0x80000000  # soffset: signed
        size = self.u16(vtable)
        slot = 4 + 2 * index
        if slot + 2 > size:
            return None
        offset = self.u16(vtable + slot)
        return None if offset == 0 else table + offset

    def indirect(self, at: int) -> int:
        return at + self.u32(at)

    def vector(self, table: int, index: int) -> list[int]:
        """Positions of the elements (offsets to tables/strings) of a vector field."""
        at = self.field(table, index)
        if at is None:
            return []
        vec = self.indirect(at)
        n = self.u32(vec)
        if n > len(self.data) // 4:
            raise ModelLoadError("the model file is truncated or not a TFLite flatbuffer")
        return [self.indirect(vec + 4 + 4 * i) for i in range(n)]

    def string(self, at: int) -> str:
        n = self.u32(at)
        raw = self.data[at + 4 : at + 4 + n]
        if len(raw) != n:
            raise ModelLoadError("the model file is truncated or not a TFLite flatbuffer")
        return raw.decode("utf-8", "replace")


def outline(model: bytes) -> ModelOutline:
    """Read the subgraph count and the custom operators of a TFLite flatbuffer.

    Raises:
        ModelLoadError: the bytes are not a well-formed TFLite flatbuffer.
    """
    r = _Reader(bytes(model))
    root = r.u32(0)
    subgraphs = len(r.vector(root, _MODEL_SUBGRAPHS))
    custom = []
    for code in r.vector(root, _MODEL_OPERATOR_CODES):
        at = r.field(code, _OPCODE_CUSTOM_CODE)
        if at is not None:
            custom.append(r.string(r.indirect(at)))
    return ModelOutline(subgraphs, tuple(custom))
