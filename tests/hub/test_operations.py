"""The hub's use cases on their real parts (registry, signer, audit log, store: SQLite
files under tmp_path); only the broker is replaced, by a recorder of what would be
published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.directive import SignedDirective, accept_directive
from edge_agent.contract.messages import MetricsMessage
from edge_agent.contract.trust import TrustRoot
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator
from edge_agent.inference.model import LoadedModel
from hub.audit import AuditLog
from hub.bundler import ReferenceData
from hub.dispatch import DirectiveSigner
from hub.drift import DriftThresholds
from hub.errors import NotFoundError
from hub.modelkit.dataset import FEATURES, Drift, make_dataset
from hub.operations import Deployer, DriftQueries, DriftScope
from hub.registry import Registry
from hub.rollups import HOUR_S
from hub.store import Store

T0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR_S  # an hour boundary
DRIFTED = "bearing_temp_c"


class Recorder:
    """Stands in for the broker: keeps what was published."""

    def __init__(self) -> None:
        self.published: list[SignedDirective] = []

    def publish(self, signed: SignedDirective, timeout: float = 10.0) -> None:
        self.published.append(signed)


KEY = Ed25519PrivateKey.generate()
TRUST = TrustRoot.from_keys([KEY.public_key()], threshold=1)


@pytest.fixture
def parts(tmp_path: Path, demo_dir: Path) -> Iterator[tuple[Registry, Store, AuditLog]]:
    db = tmp_path / "hub.db"
    store = Store(db)
    with Registry(db, tmp_path / "bundles", TRUST, [KEY]) as registry:
        with np.load(demo_dir / "reference.npz") as data:
            ref = ReferenceData(np.asarray(data["x"], dtype=np.float64), FEATURES)
        registry.push_model(
            (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
        )
        audit = AuditLog(db)
        yield registry, store, audit
    store.close()


def deployer(
    registry: Registry, store: Store, audit: AuditLog, tmp_path: Path
) -> tuple[Deployer, Recorder]:
    recorder = Recorder()
    signer = DirectiveSigner(tmp_path / "hub.db", [KEY])
    return (
        Deployer(
            registry,
            signer,
            recorder,
            lambda sha: f"https://hub/b/{sha}?sig=x",
            audit=audit,
            store=store,
        ),
        recorder,
    )


def test_deploy_publishes_a_signed_directive_naming_the_registered_bundle(parts, tmp_path):
    registry, store, audit = parts
    ops, recorder = deployer(registry, store, audit, tmp_path)
    d = ops.deploy("dev-1", "pump", 1, actor="token:1:ops", mode="shadow", ttl_s=600)
    found = registry.get("pump", 1)
    assert found is not None
    [signed] = recorder.published
    assert signed.directive == d and d.device_id == "dev-1" and d.mode == "shadow"
    assert d.model.sha256 == found.sha256 and d.model.size == found.size
    assert d.model.urls == (f"https://hub/b/{found.sha256}?sig=x",)
    assert d.expires_at - d.issued_at == 600
    accepted = accept_directive(  # what a device checks: the signature under the trust root
        signed.to_bytes(), trust=TRUST, device_id="dev-1", now=d.issued_at, last_seq=0,
        installed_version=None,
    )  # fmt: skip
    assert accepted == d
    [entry] = [e for e in audit.entries(0, 100) if e.action == "directive.publish"]
    assert (entry.actor, entry.target) == ("token:1:ops", "dev-1")
    assert entry.details == {
        "seq": d.seq, "model": "pump", "version": 1, "mode": "shadow", "downgrade": False,
    }  # fmt: skip


def test_each_deploy_to_a_device_gets_the_next_sequence_number(parts, tmp_path):
    registry, store, audit = parts
    ops, _ = deployer(registry, store, audit, tmp_path)
    seqs = [ops.deploy("dev-1", "pump", 1, actor="a").seq for _ in range(3)]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]


def test_deploy_of_an_unregistered_version_publishes_nothing(parts, tmp_path):
    registry, store, audit = parts
    ops, recorder = deployer(registry, store, audit, tmp_path)
    with pytest.raises(NotFoundError, match=r"no model 'pump' v9"):
        ops.deploy("dev-1", "pump", 9, actor="a")
    assert recorder.published == [] and audit.entries(0, 100) == []


def test_deploy_with_malformed_probation_publishes_nothing(parts, tmp_path):
    registry, store, audit = parts
    ops, recorder = deployer(registry, store, audit, tmp_path)
    with pytest.raises(ValidationError, match="probation"):
        ops.deploy("dev-1", "pump", 1, actor="a", probation={"window_s": "soon"})
    assert recorder.published == []


def test_rollout_directives_name_their_rollout_in_directive_and_audit(parts, tmp_path):
    registry, store, audit = parts
    ops, recorder = deployer(registry, store, audit, tmp_path)
    ref = ops.bundle_ref("pump", 1)
    for device in ("dev-1", "dev-2"):
        ops.publish(device, ref, actor="hub", rollout="r1", downgrade=True)
    assert [s.directive.rollout for s in recorder.published] == ["r1", "r1"]
    details = [e.details for e in audit.entries(0, 100)]
    assert [d["rollout"] for d in details] == ["r1", "r1"] and all(d["downgrade"] for d in details)


@pytest.fixture
def fleet(parts, demo_dir: Path) -> tuple[Store, DriftQueries]:
    """40 minutes of 60 s windows from three devices: dev-0 and dev-1 tagged north,
    dev-2 tagged south with a drifting sensor."""
    registry, store, _ = parts
    model = LoadedModel((demo_dir / "model-int8.tflite").read_bytes())
    reference = registry.reference("pump", 1)
    messages = []
    for d in range(3):
        drift = Drift(offset=2.0, features=(DRIFTED,)) if d == 2 else None
        x = make_dataset(40 * 60, seed=10 + d, drift=drift).x.astype(np.float64)
        for q in range(40):
            start = T0 + 60.0 * q
            acc = WindowAccumulator(reference, "pump", 1, clock=lambda s=start: s)
            rows = x[q * 60 : (q + 1) * 60]
            acc.record(rows, model.predict(rows.astype(np.float32)), 0.001)
            w = acc.close(now=start + 60.0)
            assert w is not None
            messages.append(MetricsMessage(f"dev-{d}", q + 1, q + 1, (w,)))
    store.store_metrics(messages)
    for d, tag in (("dev-0", "north"), ("dev-1", "north"), ("dev-2", "south")):
        store.set_tags(d, [tag])
    return store, DriftQueries(store, registry.reference)


def predictions(fleet_drift) -> int:
    return sum(w.n for w in fleet_drift.windows)


@pytest.mark.parametrize(
    ("scope", "devices"),
    [
        (DriftScope("pump", 1), 3),
        (DriftScope("pump", 1, device="dev-2"), 1),
        (DriftScope("pump", 1, tag="north"), 2),
        (DriftScope("pump", 1, tag="north", device="dev-2"), 0),  # dev-2 is not north
        (DriftScope("pump", 1, devices=("dev-0", "dev-2")), 2),
        (DriftScope("pump", 1, role="shadow"), 0),
    ],
)
def test_a_scope_merges_exactly_its_devices_windows(fleet, scope, devices):
    _, queries = fleet
    assert predictions(queries.fetch(scope)) == devices * 40 * 60


def test_since_counts_windows_ending_at_or_after_it(fleet):
    _, queries = fleet
    got = queries.fetch(DriftScope("pump", 1, device="dev-0"), T0 + 60.0 * 30)
    assert predictions(got) == 11 * 60 and got.since == T0 + 60.0 * 30  # windows 29..39


def test_inexact_since_moves_to_its_hour_for_more_than_one_device(fleet):
    _, queries = fleet
    fleet_wide = queries.fetch(DriftScope("pump", 1), T0 + 1800.0, exact=False)
    assert fleet_wide.since == T0 and predictions(fleet_wide) == 3 * 40 * 60
    one = queries.fetch(DriftScope("pump", 1, device="dev-0"), T0 + 1800.0, exact=False)
    assert one.since == T0 + 1800.0  # one device: its own windows answer exactly


def test_drift_is_found_where_it_is_and_not_where_it_is_not(fleet):
    _, queries = fleet
    south, report = queries.fetch(DriftScope("pump", 1, tag="south")).assess()
    assert south.verdict in ("drift", "major") and DRIFTED in south.drifted
    assert report is not None and report.n == 40 * 60 and report.decision == south
    north, _ = queries.fetch(DriftScope("pump", 1, tag="north")).assess()
    assert north.verdict in ("none", "minor")


def test_a_scope_without_windows_says_insufficient_with_the_evidence_needed(fleet):
    _, queries = fleet
    empty = queries.fetch(DriftScope("pump", 1, device="nobody"))
    decision, report = empty.assess(thresholds=DriftThresholds(alpha=0.05))
    assert report is None and empty.report() is None
    assert decision.verdict == "insufficient" and decision.n == 0 and decision.n_needed
