"""The bundle manifest: what a bundle holds, each member's digest, and the model's tensors.

The manifest is stored in the bundle as canonical JSON and signed as those exact
bytes. It carries the SHA-256 and size of every other member, so one signature
covers the whole bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.fields import (
    as_object,
    exact_fields,
    list_of,
    positive_int,
    safe_name,
    sha256_hex,
)
from edge_agent.contract.fields import field as get
from edge_agent.errors import ValidationError

BUNDLE_FORMAT: Final = "edgefleet-bundle/1"
MANIFEST: Final = "manifest.json"
SIGNATURES: Final = "signatures.json"
MODEL: Final = "model.tflite"
REFERENCE: Final = "reference.json"
INPUT_SCHEMA: Final = "schema.json"
SAMPLES: Final = "samples.json"
#: Members the manifest must list (every member but the manifest and its signatures).
CONTENT_MEMBERS: Final = frozenset({MODEL, REFERENCE, INPUT_SCHEMA, SAMPLES})
DTYPES: Final = frozenset(
    {"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"}
)


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime reports it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    quantization: Quantization | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "quantization": self.quantization.to_json() if self.quantization else None,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> TensorSpec:
        """Parse the JSON form.

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(value, where, {"name", "dtype", "shape", "quantization"})
        dtype = get(obj, "dtype", str, where)
        if dtype not in DTYPES:
            raise ValidationError(f"{where}.dtype: {dtype!r} is not one of {sorted(DTYPES)}")
        shape = tuple(list_of(obj, "shape", int, where))
        if any(d < -1 for d in shape):
            raise ValidationError(f"{where}.shape: dimensions are -1 (any) or >= 0")
        quant = None
        if obj["quantization"] is not None:
            q = exact_fields(obj["quantization"], f"{where}.quantization", {"scale", "zero_point"})
            scale = get(q, "scale", float, f"{where}.quantization")
            if not scale > 0:
                raise ValidationError(f"{where}.quantization.scale must be > 0")
            quant = Quantization(scale, get(q, "zero_point", int, f"{where}.quantization"))
        return cls(get(obj, "name", str, where), dtype, shape, quant)


@dataclass(frozen=True)
class MemberDigest:
    """Size and SHA-256 of one bundle member."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest (see the module doc)."""

    name: str
    version: int
    created_at: str
    min_agent_version: str
    members: dict[str, MemberDigest]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document."""
        return {
            "format": BUNDLE_FORMAT,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "min_agent_version": self.min_agent_version,
            "members": {
                n: {"sha256": d.sha256, "size": d.size} for n, d in sorted(self.members.items())
            },
            "model": {
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
            },
            "lineage": self.lineage,
        }

    def to_bytes(self) -> bytes:
        """Return the canonical bytes that are stored and signed."""
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, value: Any, where: str = "manifest") -> Manifest:
        """Parse and check a manifest document.

        Raises:
            ValidationError: a field is missing, extra, of the wrong type, or a
                member list other than the bundle's content members.
        """
        obj = exact_fields(
            value,
            where,
            {
                "format",
                "name",
                "version",
                "created_at",
                "min_agent_version",
                "members",
                "model",
                "lineage",
            },
        )
        fmt = get(obj, "format", str, where)
        if fmt != BUNDLE_FORMAT:
            raise ValidationError(f"{where}.format: {fmt!r} is not {BUNDLE_FORMAT!r}")
        members_obj = as_object(obj["members"], f"{where}.members")
        if set(members_obj) != CONTENT_MEMBERS:
            raise ValidationError(
                f"{where}.members: must list exactly {sorted(CONTENT_MEMBERS)}, "
                f"got {sorted(members_obj)}"
            )
        members = {}
        for name, entry in members_obj.items():
            at = f"{where}.members.{name}"
            m = exact_fields(entry, at, {"sha256", "size"})
            members[name] = MemberDigest(sha256_hex(m, "sha256", at), positive_int(m, "size", at))
        model = exact_fields(obj["model"], f"{where}.model", {"inputs", "outputs"})
        inputs = tuple(
            TensorSpec.from_json(t, f"{where}.model.inputs[{i}]")
            for i, t in enumerate(list_of(model, "inputs", dict, f"{where}.model"))
        )
        outputs = tuple(
            TensorSpec.from_json(t, f"{where}.model.outputs[{i}]")
            for i, t in enumerate(list_of(model, "outputs", dict, f"{where}.model"))
        )
        if not inputs or not outputs:
            raise ValidationError(f"{where}.model: needs at least one input and one output")
        return cls(
            name=safe_name(obj["name"], f"{where}.name"),
            version=positive_int(obj, "version", where),
            created_at=get(obj, "created_at", str, where),
            min_agent_version=get(obj, "min_agent_version", str, where),
            members=members,
            inputs=inputs,
            outputs=outputs,
            lineage=as_object(obj["lineage"], f"{where}.lineage"),
        )
