"""A real hub (``HubService`` with its embedded broker, on free loopback ports) holding a
small deterministic fleet: devices with fixed tags, states, times and events, and a
model with two registered versions. Used by the client and console tests and by
``tests/support/console_hub.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.contract.messages import Event, EventKind, Health, ModelVersion, State
from hub.alerts import Alerter, AlertRule, Scope
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.device_drift import DeviceVerdicts
from hub.service import HubService, HubSettings

#: The fleet's clock: every time the seeded state shows is relative to this.
T0 = 1_790_000_000.0

#: id, tags, online, active version (None: no model), shadow version, buffer depth
DEVICES: tuple[tuple[str, tuple[str, ...], bool, int | None, int | None, int], ...] = (
    ("pump-01", ("site-a", "line-1"), True, 1, None, 0),
    ("pump-02", ("site-a", "line-2"), True, 1, 2, 3),
    ("pump-03", ("site-a",), False, 1, None, 12),
    ("pump-04", ("site-b",), True, 2, None, 0),
    ("pump-05", ("site-b", "line-1"), False, None, None, 0),
    ("valve-01", ("site-b",), True, 2, None, 1),
)


@dataclass
class Fleet:
    """A running hub with its tokens (``admin``, ``deploy``, ``read``)."""

    service: HubService
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        assert self.service.api is not None
        return self.service.api.url


def seed(service: HubService, model_bytes: bytes, reference: np.ndarray, now: float = T0) -> None:
    """Register ``pump`` v1 and v2 and write the fixed devices and their events, with
    times relative to ``now``."""
    assert service.registry is not None and service.store is not None
    ref = ReferenceData(reference, tuple(f"f{i}" for i in range(reference.shape[1])))
    for _ in (1, 2):
        service.registry.push_model(model_bytes, name="pump", reference=ref)
    store = service.store
    for i, (dev, tags, online, active, shadow, depth) in enumerate(DEVICES):
        store.set_tags(dev, tags, now=now - 86_400)
        if active is not None or online:
            store.record_state(
                State(
                    dev,
                    True,
                    ts=now - 60 * i,
                    active=ModelVersion("pump", active) if active else None,
                    previous=ModelVersion("pump", 1) if active == 2 else None,
                    shadow=ModelVersion("pump", shadow) if shadow else None,
                    health=Health(12.5 + i, (40 + i) << 20, (2 + i) << 30, 3600.0 * (i + 1)),
                    buffer_depth=depth,
                ),
                now=now - 60 * i,
            )
        if not online:
            store.record_state(State(dev, False), now=now - 30 * 60 * (i + 1))
    for i, (dev, _, _, active, _, _) in enumerate(DEVICES):
        if active is None:
            continue
        model = ModelVersion("pump", active)
        store.record_event(Event(dev, now - 600 + i, EventKind.RECEIVED, "", model, 1))
        store.record_event(Event(dev, now - 590 + i, EventKind.ACTIVATED, "", model, 1))
    v2 = ModelVersion("pump", 2)
    store.record_event(Event("pump-03", now - 100, EventKind.FAILED, "smoke test failed", v2, 2))


def record_alerts(service: HubService, now: float = T0) -> None:
    """Record alert transitions the way the hub's alerter does, from the seeded fleet:
    ``fleet-offline`` fires (2 of 6 devices offline) and stays firing;
    ``pump-03-offline`` fires, then resolves after its rule is edited (the hub restarted
    with ``> 0.5`` turned into ``< 0.5``, so the same value misses it)."""
    assert service.store is not None and service.registry is not None
    store, reference = service.store, service.registry.reference
    fleet = AlertRule("fleet-offline", "offline_devices_share", ">", 0.1)
    device = Scope(device="pump-03")
    before = AlertRule("pump-03-offline", "offline_devices_share", ">", 0.5, scope=device)
    first = Alerter(store, reference, [fleet, before], clock=lambda: now)
    try:
        assert [a.state for a in first.tick(now - 120)] == ["firing", "firing"]
    finally:
        first.close()
    after = AlertRule("pump-03-offline", "offline_devices_share", "<", 0.5, scope=device)
    second = Alerter(store, reference, [after], clock=lambda: now)
    try:
        assert [a.state for a in second.tick(now - 60)] == ["resolved"]
    finally:
        second.close()


@contextmanager
def running_fleet(
    data_dir: Path,
    model_bytes: bytes,
    reference: np.ndarray,
    now: float = T0,
    **settings: object,
) -> Iterator[Fleet]:
    """A started hub with the seeded fleet and one token per scope; stopped on exit."""
    hub_settings = HubSettings(
        data_dir=data_dir,
        api_port=0,
        embedded_broker_port=free_port(),
        **settings,  # type: ignore[arg-type]
    )
    with HubService(hub_settings) as service:
        seed(service, model_bytes, reference, now)
        assert service.context is not None and service.store is not None
        assert service.registry is not None
        # Each device's drift verdict covers the hours before the fleet's clock, not ours.
        service.context.verdicts = DeviceVerdicts(
            service.store, service.registry.reference, clock=lambda: now
        )
        assert service.tokens is not None
        tokens = {
            scope: service.tokens.create(f"{scope}-token", [scope])[0]
            for scope in ("admin", "deploy", "read")
        }
        yield Fleet(service, tokens)


def record_windows(
    service: HubService,
    model_bytes: bytes,
    reference: np.ndarray,
    device: str = "pump-02",
    now: float = T0,
    hours: int = 6,
) -> None:
    """Store ``hours`` of 10-minute windows of ``pump`` v1 for ``device``, ending at
    ``now``, as an agent counts them (the real accumulator on the real model): 40
    predictions each on reference rows (fixed seed); in the last two hours feature
    ``f0`` drifts (3 reference deviations), invocations slow from 1 to 20 ms, and one
    in ten fails."""
    from edge_agent.contract.messages import MetricsMessage
    from edge_agent.inference.accumulator import WindowAccumulator
    from edge_agent.inference.model import LoadedModel

    assert service.registry is not None and service.store is not None
    ref = service.registry.reference("pump", 1)
    model = LoadedModel(model_bytes)
    rng = np.random.default_rng(7)
    count = hours * 6
    messages = []
    for q in range(count):
        start = now - (count - q) * 600.0
        late = q >= count - 12
        x = reference[rng.integers(len(reference), size=40)].astype(np.float64)
        if late:
            x[:, 0] += 3 * reference[:, 0].std()
        probs = model.predict(x.astype(np.float32))
        acc = WindowAccumulator(ref, "pump", 1, clock=lambda s=start: s)
        for row, p in zip(x, probs, strict=True):
            acc.record(row, p, 0.020 if late else 0.001)
        if late:
            acc.record_error("invoke_error", 4)
        w = acc.close(now=start + 600.0)
        assert w is not None
        messages.append(MetricsMessage(device, q + 1, q + 1, (w,)))
    service.store.store_metrics(messages)
