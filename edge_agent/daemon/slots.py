"""Verified bundles on disk and which one is active: atomic switch, rollback, crash count.

Layout under the agent's data directory::

    slots/<name>-v<version>-<sha12>.efb   verified bundles, immutable once in place
    slots.json                            the pointer: active, previous, shadow, probation

A bundle enters ``slots/`` by rename after it was verified, and the pointer is
replaced atomically (:mod:`edge_agent.durable`), so a kill -9 at any instant leaves
the old pointer or the new one, each naming complete, verified bundles. Every load
verifies the bundle again against the pinned trust root. A bundle installed before a
key rotation was signed by keys since retired: a load (not an install) also accepts
the roots rotated away from, so the models a device already holds keep loading and
rolling back after it rotates.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_agent.contract.bundle import Bundle, verify_bundle
from edge_agent.contract.fields import exact_fields
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.trust import TrustRoot
from edge_agent.durable import fsync_dir, read_json, write_json_atomic
from edge_agent.errors import ActivationError, BundleError, EdgeFleetError, TrustError


@dataclass(frozen=True)
class SlotRef:
    """A bundle in ``slots/``: its file name and what it holds."""

    file: str
    name: str
    version: int
    sha256: str

    @property
    def model(self) -> ModelVersion:
        """The model version this slot holds."""
        return ModelVersion(self.name, self.version, self.sha256)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "file": self.file,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, value: Any) -> SlotRef | None:
        """Parse (``null`` gives None).

        Raises:
            ValidationError: malformed.
        """
        if value is None:
            return None
        obj = exact_fields(value, "slot", {"file", "name", "version", "sha256"})
        return cls(str(obj["file"]), str(obj["name"]), int(obj["version"]), str(obj["sha256"]))


@dataclass(frozen=True)
class ProbationRecord:
    """A model on probation: the directive that activated it, and crashes seen since."""

    directive_seq: int
    started_at: float
    crashes: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "directive_seq": self.directive_seq,
            "started_at": self.started_at,
            "crashes": self.crashes,
        }


@dataclass(frozen=True)
class Pointer:
    """What is active, what it replaced, what runs in shadow, and probation."""

    active: SlotRef | None = None
    previous: SlotRef | None = None
    shadow: SlotRef | None = None
    probation: ProbationRecord | None = None
    running: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "active": self.active.to_json() if self.active else None,
            "previous": self.previous.to_json() if self.previous else None,
            "shadow": self.shadow.to_json() if self.shadow else None,
            "probation": self.probation.to_json() if self.probation else None,
            "running": self.running,
        }

    @classmethod
    def from_json(cls, value: Any) -> Pointer:
        """Parse.

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(
            value, "slots.json", {"active", "previous", "shadow", "probation", "running"}
        )
        prob = obj["probation"]
        return cls(
            active=SlotRef.from_json(obj["active"]),
            previous=SlotRef.from_json(obj["previous"]),
            shadow=SlotRef.from_json(obj["shadow"]),
            probation=None
            if prob is None
            else ProbationRecord(
                int(prob["directive_seq"]), float(prob["started_at"]), int(prob["crashes"])
            ),
            running=bool(obj["running"]),
        )


class SlotStore:
    """The slots directory and its pointer file."""

    def __init__(
        self, data_dir: Path, trust: TrustRoot, retired: tuple[TrustRoot, ...] = ()
    ) -> None:
        """Open (creating with mode 0700) the store under ``data_dir``.

        ``trust`` verifies what is installed; ``retired`` (roots rotated away from)
        also verifies what is loaded, for bundles installed before a rotation.

        Raises:
            OSError: the directories cannot be created.
        """
        self.dir = data_dir / "slots"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pointer_path = data_dir / "slots.json"
        self.trust = trust
        self.retired = retired

    def pointer(self) -> Pointer:
        """The current pointer (an empty one before the first activation).

        Raises:
            ValidationError: the pointer file is corrupt.
        """
        doc = read_json(self.pointer_path)
        return Pointer() if doc is None else Pointer.from_json(doc)

    def write(self, pointer: Pointer) -> None:
        """Replace the pointer atomically.

        Raises:
            OSError: it cannot be written (the old pointer stays).
        """
        write_json_atomic(self.pointer_path, pointer.to_json())

    def install(self, downloaded: Path) -> SlotRef:
        """Verify a downloaded bundle and move it into ``slots/``.

        The file is renamed (same filesystem), so a kill leaves it either in the
        download area or complete in ``slots/``.

        Raises:
            BundleError: the bundle does not verify (the file is removed).
            OSError: it cannot be moved.
        """
        try:
            bundle = verify_bundle(downloaded, self.trust)
        except EdgeFleetError:
            with contextlib.suppress(OSError):
                downloaded.unlink()
            raise
        m = bundle.manifest
        with downloaded.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        ref = SlotRef(f"{m.name}-v{m.version}-{digest[:12]}.efb", m.name, m.version, digest)
        target = self.dir / ref.file
        downloaded.chmod(0o600)
        downloaded.replace(target)
        fsync_dir(self.dir)
        return ref

    def find(self, sha256: str) -> SlotRef | None:
        """A slot already holding the bundle with this digest, if any."""
        p = self.pointer()
        for ref in (p.active, p.previous, p.shadow):
            if ref is not None and ref.sha256 == sha256 and (self.dir / ref.file).exists():
                return ref
        return None

    def load(self, ref: SlotRef) -> Bundle:
        """Verify a slot's bundle again (it may have been damaged on disk) and return it.

        The current root is tried first, then the retired ones, newest first.

        Raises:
            ActivationError: the slot is missing or no longer verifies.
        """
        try:
            return verify_bundle(self.dir / ref.file, self.trust)
        except BundleError as exc:
            if not isinstance(exc.__cause__, TrustError):
                raise ActivationError(f"slot {ref.file} cannot be used: {exc}") from exc
            for root in reversed(self.retired):  # installed before a rotation?
                with contextlib.suppress(BundleError, OSError):
                    return verify_bundle(self.dir / ref.file, root)
            raise ActivationError(f"slot {ref.file} cannot be used: {exc}") from exc
        except (EdgeFleetError, OSError) as exc:
            raise ActivationError(f"slot {ref.file} cannot be used: {exc}") from exc

    def activate(self, ref: SlotRef, probation: ProbationRecord | None) -> Pointer:
        """Make ``ref`` active, keeping the old active as ``previous`` (atomic).

        Raises:
            OSError: the pointer cannot be written (nothing changed).
        """
        p = self.pointer()
        previous = p.active if p.active is not None and p.active.file != ref.file else p.previous
        shadow = None if p.shadow is not None and p.shadow.file == ref.file else p.shadow
        new = replace(p, active=ref, previous=previous, shadow=shadow, probation=probation)
        self.write(new)
        self.collect_garbage(new)
        return new

    def rollback(self) -> Pointer:
        """Make ``previous`` active again and end probation (atomic).

        Raises:
            ActivationError: there is no previous model to go back to.
            OSError: the pointer cannot be written.
        """
        p = self.pointer()
        if p.previous is None:
            raise ActivationError("no previous model to roll back to")
        new = replace(p, active=p.previous, previous=None, probation=None)
        self.write(new)
        self.collect_garbage(new)
        return new

    def set_shadow(self, ref: SlotRef | None) -> Pointer:
        """Run ``ref`` in shadow (None stops shadowing).

        Raises:
            OSError: the pointer cannot be written.
        """
        new = replace(self.pointer(), shadow=ref)
        self.write(new)
        self.collect_garbage(new)
        return new

    def end_probation(self) -> Pointer:
        """Keep the active model: probation passed.

        Raises:
            OSError: the pointer cannot be written.
        """
        new = replace(self.pointer(), probation=None)
        self.write(new)
        return new

    def collect_garbage(self, pointer: Pointer) -> None:
        """Remove slot files the pointer no longer names (and stale temp files)."""
        keep = {r.file for r in (pointer.active, pointer.previous, pointer.shadow) if r}
        for path in self.dir.iterdir():
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
