"""The device's trust root: the pin installed at enrolment plus the rotations adopted since.

The trust file named in ``agent.toml`` is the pin written at enrolment; the agent only
reads it (the systemd unit keeps ``/etc`` read-only for the daemon). The rotation
records the agent adopts are kept in ``<data_dir>/rotations.json``, replaced atomically
(:mod:`edge_agent.durable`: temp file, fsync, rename), so a kill at any instant leaves
the old chain or the new one. At start the stored records are applied to the pin
again, every signature checked, so nothing written into the data directory can make
the agent trust a key that the chain of signatures from the pin does not lead to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.contract.trust import Advance, RotationChain, TrustRoot, advance
from edge_agent.durable import write_json_atomic
from edge_agent.errors import ValidationError

log = logging.getLogger("edgefleet.agent")

#: The adopted rotation records, under the agent's data directory.
ROTATIONS_FILE: Final = "rotations.json"


@dataclass
class PinnedTrust:
    """The roots a device went through, the last one current, and where they come from."""

    pin_path: Path
    chain_path: Path
    roots: tuple[TrustRoot, ...]
    chain: RotationChain
    """The records adopted on top of the pin (what ``chain_path`` holds)."""

    @property
    def root(self) -> TrustRoot:
        """The current root: what bundles and directives must be signed by."""
        return self.roots[-1]

    @property
    def retired(self) -> tuple[TrustRoot, ...]:
        """Roots rotated away from (oldest first)."""
        return self.roots[:-1]

    @classmethod
    def load(cls, trust_file: Path, data_dir: Path) -> PinnedTrust:
        """Read the pin and apply the stored rotations to it again.

        A stored chain that is unreadable, or a record that no longer follows (the pin
        was replaced), is logged and left out: the agent then starts from the pin, and
        the hub's retained rotations bring it forward again.

        Raises:
            ValidationError: the trust file is malformed.
            OSError: the trust file cannot be read.
        """
        pin = TrustRoot.load(trust_file)
        path = data_dir / ROTATIONS_FILE
        try:
            stored = RotationChain.load(path)
        except (ValidationError, OSError) as exc:
            log.warning("agent: stored rotations unusable (%s); starting from %s", exc, trust_file)
            stored = RotationChain()
        step = advance(pin, stored.records)
        if step.refused:
            log.warning("agent: a stored rotation does not follow %s: %s", trust_file, step.refused)
        return cls(trust_file, path, step.roots, RotationChain(step.adopted))

    def adopt(self, chain: RotationChain) -> Advance:
        """Adopt the records of ``chain`` that follow the current root (see :func:`advance`).

        What is adopted is stored before this returns; the current root changes only
        once it is.

        Raises:
            OSError: the chain cannot be stored (nothing changed).
        """
        step = advance(self.root, chain.records)
        if step.adopted:
            kept = RotationChain(self.chain.records + step.adopted)
            write_json_atomic(self.chain_path, kept.to_json(), 0o600)
            self.chain = kept
            self.roots = self.roots + step.roots[1:]
        return step
