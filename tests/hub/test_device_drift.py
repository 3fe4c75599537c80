"""Each device's drift verdict and faults on ``GET /v1/devices``: the one rule on the
device's active version over the previous and the current clock hour, the ``drift``
and ``faulty`` filters, and their one-line refusals (a real hub on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from edge_agent.contract.messages import Event, EventKind, ModelVersion, State
from hub.device_drift import DeviceVerdicts
from hub.errors import UnavailableError
from hub.operations import DriftScope
from hub.registry import RegistryError
from hub.store import Store
from tests.support.fleet import T0, Fleet, record_windows, running_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_dir, reference_x) -> Iterator[Fleet]:
    """The seeded fleet; pump-02 drifts (windows up to T0), pump-01's windows ended
    three hours before T0 (stable, but outside the span)."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path_factory.mktemp("hub"), model, reference_x) as f:
        record_windows(f.service, model, reference_x, device="pump-02", now=T0)
        record_windows(f.service, model, reference_x, device="pump-01", now=T0 - 3 * 3600, hours=2)
        yield f


def devices(fleet: Fleet, **params: object) -> dict[str, object]:
    """id -> drift verdict of the devices ``/v1/devices`` lists with ``params``."""
    reply = httpx.get(
        f"{fleet.url}/v1/devices",
        params=params,  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {fleet.tokens['read']}"},
    )
    assert reply.status_code == 200, reply.text
    return {d["id"]: d["drift"] for d in reply.json()["devices"]}


def test_each_device_carries_its_verdict_over_the_last_hours(fleet):
    listed = devices(fleet)
    assert listed["pump-02"] in ("drift", "major")  # f0 moved 3 sd in the last two hours
    assert listed["pump-01"] == "insufficient"  # its windows ended 3 hours ago
    assert listed["pump-04"] == "insufficient"  # v2 runs, no windows at all
    assert listed["pump-05"] is None  # no model: nothing to compare with
    detail = httpx.get(
        f"{fleet.url}/v1/devices/pump-02",
        headers={"Authorization": f"Bearer {fleet.tokens['read']}"},
    ).json()
    assert detail["drift"] == listed["pump-02"]


def test_the_verdict_is_the_one_rule_on_the_devices_hours(fleet):
    """The same windows through the fleet's drift query, scoped to the device since the
    start of the previous clock hour, give the same verdict."""
    assert fleet.service.context is not None
    drift = fleet.service.context.drift()
    since = (T0 // 3600 - 1) * 3600
    for device in ("pump-01", "pump-02"):
        expected = drift.fetch(DriftScope("pump", 1, device=device), since).decision().verdict
        assert devices(fleet)[device] == expected


def test_drift_filter_keeps_the_verdicts_asked_for(fleet):
    major = devices(fleet, drift=devices(fleet)["pump-02"])
    assert list(major) == ["pump-02"]
    assert set(devices(fleet, drift=["insufficient", "none"])) == {
        "pump-01", "pump-03", "pump-04", "valve-01"
    }  # fmt: skip


def test_faulty_is_offline_failed_or_drifted(fleet):
    # pump-03: offline and its v2 deployment failed; pump-05: never connected;
    # pump-02: drifted; the others are connected, deployed, and without drift.
    assert set(devices(fleet, faulty="true")) == {"pump-02", "pump-03", "pump-05"}
    assert set(devices(fleet, faulty="false")) == {"pump-01", "pump-04", "valve-01"}
    assert set(devices(fleet, faulty="true", tag="site-a", limit=1)) == {"pump-02"}


@pytest.mark.parametrize(("query", "named"), [("drift=bogus", "drift"), ("faulty=maybe", "faulty")])
def test_a_bad_filter_value_is_a_400_in_one_line(fleet, query, named):
    reply = httpx.get(
        f"{fleet.url}/v1/devices?{query}",
        headers={"Authorization": f"Bearer {fleet.tokens['read']}"},
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert named in error and "\n" not in error


def test_a_failed_deployment_is_faulty_until_a_later_one_succeeds(tmp_path, demo_dir, reference_x):
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as f:
        assert f.service.store is not None and f.service.registry is not None
        verdicts = DeviceVerdicts(f.service.store, f.service.registry.reference, clock=lambda: T0)
        v2 = ModelVersion("pump", 2)
        assert "pump-04" not in verdicts.refresh().failed
        f.service.store.record_event(
            Event("pump-04", T0, EventKind.ROLLED_BACK, "probation", v2, 3)
        )
        assert "pump-04" in verdicts.refresh().failed
        f.service.store.record_event(Event("pump-04", T0 + 1, EventKind.RECEIVED, "", v2, 4))
        assert "pump-04" not in verdicts.refresh().failed  # a new deployment is under way
        f.service.store.record_event(Event("pump-04", T0 + 2, EventKind.REFUSED, "bad", v2, 5))
        f.service.store.record_event(Event("pump-04", T0 + 3, EventKind.COMPACTED, "", None, 5))
        assert "pump-04" in verdicts.refresh().failed  # other kinds do not end it


def test_kept_verdicts_are_served_then_recomputed_after_their_ttl(tmp_path, demo_dir, reference_x):
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as f:
        assert f.service.store is not None and f.service.registry is not None
        now = [T0]
        verdicts = DeviceVerdicts(
            f.service.store, f.service.registry.reference, clock=lambda: now[0], ttl_s=30
        )
        first = verdicts.current()
        assert first.verdict("pump-02") == "insufficient"
        record_windows(f.service, model, reference_x, device="pump-02", now=T0)
        assert verdicts.current() is first  # within the TTL: the kept ones
        now[0] = T0 + 31
        stale = verdicts.current()  # starts the recomputation, answers at once
        assert stale is first
        deadline = time.monotonic() + 60
        while verdicts.current().computed_at != T0 + 31:
            assert time.monotonic() < deadline, "the background recomputation never finished"
            time.sleep(0.05)
        assert verdicts.current().verdict("pump-02") in ("drift", "major")


def test_an_unregistered_version_or_no_registry_has_no_verdict(tmp_path):
    """Nothing to compare with: null, never a guess, and the other devices still decided."""
    store = Store(tmp_path / "hub.db")
    try:
        store.record_state(State("known", True, active=ModelVersion("pump", 1)), now=T0)
        store.record_state(State("ghost", True, active=ModelVersion("pump", 9)), now=T0)
        store.record_state(State("bare", True), now=T0)

        def reference(name: str, version: int):
            if version == 9:
                raise RegistryError(f"{name!r} v{version} is not registered")
            return object()  # no windows anywhere: the reference is never read

        verdicts = DeviceVerdicts(store, reference, clock=lambda: T0).refresh()
        assert verdicts.drift == {"known": "insufficient"}

        def absent(name: str, version: int):
            raise UnavailableError("no model registry")

        assert DeviceVerdicts(store, absent, clock=lambda: T0).refresh().drift == {}
    finally:
        store.close()
